// ops::load_config_text on arbitrary text. It documents one exception, ops::config_error (one
// line, "FILE:LINE: KEY: problem"); anything else escaping (a YAML::Exception, std::bad_cast,
// std::out_of_range, ...) terminates the fuzzer and counts as a crash, as does a load that never
// returns (yaml-cpp 0.7's LoadAll did that on a lone ",").
//
// Properties of an accepted config, each one something the rest of the sidecar relies on:
// at least one upstream and one route; every route names an upstream by name and index; the
// upstream URLs were split into host, port and base path; the ignore_fields pointers build the
// coalesce key's ignore_list (which throws on a pointer it cannot use: the sidecar would fail
// after start-up instead of refusing the file); and an error message is one line.
#include "fuzz_common.hpp"

#include "coalesce/canonical_json.hpp"
#include "ops/config.hpp"

#include <string>

namespace {

using namespace coalescer;

void check_accepted(const ops::config& c) {
    FUZZ_CHECK(!c.upstreams.empty());
    FUZZ_CHECK(!c.routes.empty());
    for (const auto& route : c.routes) {
        FUZZ_CHECK(route.upstream_index < c.upstreams.size());
        FUZZ_CHECK(c.upstreams[route.upstream_index].name == route.upstream);
    }
    for (const auto& up : c.upstreams) {
        FUZZ_CHECK(!up.host.empty());
        FUZZ_CHECK(up.base_path.empty() ||
                   (up.base_path.front() == '/' && up.base_path.back() != '/'));
        FUZZ_CHECK(up.max_concurrent > 0);
    }
    for (const auto& pointer : c.coalesce.ignore_fields) {
        FUZZ_CHECK(coalesce::ignore_list::is_valid_pointer(pointer));
    }
    coalesce::ignore_list compiled(c.coalesce.ignore_fields);  // must not throw
    FUZZ_CHECK(compiled.pointers() == c.coalesce.ignore_fields);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string yaml(fuzz::as_text(data, size));
    try {
        const auto c = ops::load_config_text(yaml, "fuzz.yaml");
        FUZZ_CHECK(c != nullptr);
        check_accepted(*c);
    } catch (const ops::config_error& e) {
        const std::string_view what = e.what();
        FUZZ_CHECK(what.starts_with("fuzz.yaml:"));
        FUZZ_CHECK(what.find('\n') == std::string_view::npos);
    }
    return 0;
}
