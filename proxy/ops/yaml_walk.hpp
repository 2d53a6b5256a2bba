// Walking a YAML document as the config loader does: every node carries the dotted key that
// leads to it and the line to blame, mappings refuse keys they do not expect, and every problem
// is one config_error line, "FILE:LINE: KEY: problem". Knows nothing of the config's sections.
#pragma once

#include <yaml-cpp/yaml.h>

#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace coalescer::ops::detail {

// A scalar as shown in a message: quoted, escaped, cut short. Never more than the scalar itself.
std::string quote(std::string_view s);

// A node with the dotted key that leads to it and the (0-based) line to blame.
struct field {
    YAML::Node node;
    std::string key;
    int line = 0;
};

int line_of(const YAML::Node& n);
// "a mapping", "a sequence", the quoted scalar or "an empty value": what was found instead.
std::string describe(const YAML::Node& n);
// Written in quotes (or tagged !!str): a string even when it reads as a number or a boolean.
bool is_quoted(const YAML::Node& n);

// Names the source in errors and throws them.
class loader {
  public:
    explicit loader(std::string source) : source_(std::move(source)) {}

    const std::string& source() const { return source_; }

    [[noreturn]] void fail(int line, std::string_view key, std::string_view problem) const;
    [[noreturn]] void fail(const field& f, std::string_view problem) const {
        fail(f.line, f.key, problem);
    }

  private:
    std::string source_;
};

// A YAML mapping whose keys are checked up front: plain strings, unique, each one allowed.
// An empty value (`listen:` with nothing under it) counts as an empty mapping.
class mapping {
  public:
    mapping(const loader& l, field self, std::initializer_list<std::string_view> allowed);

    std::optional<field> get(std::string_view name) const;
    // A missing required key is blamed on the mapping that lacks it.
    field require(std::string_view name) const;

    const field& self() const { return self_; }

  private:
    const loader& loader_;
    field self_;
    std::vector<std::pair<std::string, field>> entries_;
};

// A mapping whose keys are names the config chooses (models, …): each a plain, unique string.
std::vector<std::pair<std::string, field>> free_mapping(const loader& l, const field& f);

// The items of a sequence, keyed "key[i]".
std::vector<field> sequence(const loader& l, const field& f);

// The one document of `yaml`, a null node when there is none; YAML syntax errors and a second
// document are config_errors.
YAML::Node the_document(const loader& l, const std::string& yaml);

}  // namespace coalescer::ops::detail
