// Bugs of the installed libraries that the targets reach and that are fixed upstream but not in
// Debian bookworm's versions. Each is tolerated narrowly, so that fuzzing goes on to find new
// bugs, and each has a regression input in the corpus (regression-*). COALESCER_FUZZ_STRICT=1
// tolerates none of them: the regression inputs then crash or hang (see README.md).
#pragma once

#include <string_view>

namespace coalescer::fuzz {

// COALESCER_FUZZ_STRICT is set (and not "0").
bool strict();

// yaml-cpp 0.7 (jbeder/yaml-cpp#1040, fixed in #1319 after 0.8.0): some malformed streams, a
// lone "," for one, make YAML::LoadAll report empty documents forever without consuming input,
// allocating each: ops::load_config_text never returns and memory grows until the process is
// killed. True when `yaml` makes yaml-cpp's parser loop like that.
bool yaml_cpp_loops_forever(std::string_view yaml);

}  // namespace coalescer::fuzz
