#include "ops/role.hpp"

namespace coalescer::ops {

std::string_view to_string(role r) noexcept {
    switch (r) {
        case role::leader:
            return "leader";
        case role::follower:
            return "follower";
        case role::hit:
            return "hit";
        case role::bypass:
            return "bypass";
        case role::pass:
            return "pass";
    }
    return "unknown";
}

}  // namespace coalescer::ops
