#include "cluster/redis_script.hpp"

#include <openssl/evp.h>

#include <stdexcept>

namespace coalescer::cluster {

redis_script::redis_script(std::string text) : text_(std::move(text)) {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int size = 0;
    if (EVP_Digest(text_.data(), text_.size(), digest, &size, EVP_sha1(), nullptr) != 1)
        throw std::runtime_error("cluster: cannot hash a Redis script (SHA1 unavailable)");
    static constexpr char hex[] = "0123456789abcdef";
    sha1_.reserve(2 * size);
    for (unsigned int i = 0; i < size; ++i) {
        sha1_.push_back(hex[digest[i] >> 4]);
        sha1_.push_back(hex[digest[i] & 0xf]);
    }
}

}  // namespace coalescer::cluster
