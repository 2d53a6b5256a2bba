#include "ops/yaml_walk.hpp"

#include "ops/config.hpp"

#include <yaml-cpp/eventhandler.h>

#include <algorithm>
#include <cstdio>
#include <sstream>

namespace coalescer::ops::detail {
namespace {

std::string child_key(const std::string& parent, std::string_view key) {
    return parent.empty() ? std::string(key) : parent + "." + std::string(key);
}

// Counts documents and where each starts, nothing more.
class document_counter final : public YAML::EventHandler {
  public:
    int documents = 0;
    int last_line = 0;
    void OnDocumentStart(const YAML::Mark& mark) override {
        ++documents;
        last_line = std::max(mark.line, 0);
    }
    void OnDocumentEnd() override {}
    void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
    void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
    void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  const std::string&) override {}
    void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                         YAML::EmitterStyle::value) override {}
    void OnSequenceEnd() override {}
    void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                    YAML::EmitterStyle::value) override {}
    void OnMapEnd() override {}
};

}  // namespace

std::string quote(std::string_view s) {
    constexpr std::size_t max_shown = 80;
    std::size_t n = std::min(s.size(), max_shown);
    while (n > 0 && n < s.size() && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80)
        --n;  // whole UTF-8
    std::string out = "\"";
    for (char c : s.substr(0, n)) {
        auto u = static_cast<unsigned char>(c);
        if (c == '"' || c == '\\') {
            out += '\\';
            out += c;
        } else if (u < 0x20 || u == 0x7f) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\x%02x", u);
            out += buf;
        } else {
            out += c;
        }
    }
    out += '"';
    if (n < s.size())
        out += "...";
    return out;
}

int line_of(const YAML::Node& n) {
    return std::max(n.Mark().line, 0);
}

std::string describe(const YAML::Node& n) {
    if (n.IsMap())
        return "a mapping";
    if (n.IsSequence())
        return "a sequence";
    if (n.IsScalar())
        return quote(n.Scalar());
    return "an empty value";
}

// "!" is yaml-cpp's tag for a quoted scalar; "!!str" says the same explicitly.
bool is_quoted(const YAML::Node& n) {
    return n.Tag() == "!" || n.Tag() == "tag:yaml.org,2002:str";
}

void loader::fail(int line, std::string_view key, std::string_view problem) const {
    std::string msg = source_ + ":" + std::to_string(line + 1) + ": " + std::string(key) + ": " +
                      std::string(problem);
    // One line whatever the file name or the scalars contain.
    for (char& c : msg)
        if (c == '\n' || c == '\r')
            c = ' ';
    throw config_error(msg);
}

mapping::mapping(const loader& l, field self, std::initializer_list<std::string_view> allowed)
    : loader_(l), self_(std::move(self)) {
    const YAML::Node& node = self_.node;
    if (node.IsNull())
        return;
    if (!node.IsMap())
        loader_.fail(self_, "expected a mapping, got " + describe(node));
    for (auto it = node.begin(); it != node.end(); ++it) {
        // Copies: yaml-cpp's iterator hands out a temporary pair.
        const YAML::Node k = it->first;
        const YAML::Node v = it->second;
        if (!k.IsScalar())
            loader_.fail(line_of(k), child_key(self_.key, "?"),
                         "keys must be plain strings, got " + describe(k));
        const std::string& name = k.Scalar();
        std::string key = child_key(self_.key, name);
        if (std::find(allowed.begin(), allowed.end(), name) == allowed.end())
            loader_.fail(line_of(k), key, "unknown key");
        if (auto first = get(name))
            loader_.fail(line_of(k), key,
                         "duplicate key (first at line " + std::to_string(first->line + 1) + ")");
        // An empty value has no line of its own (yaml-cpp marks the next token): blame the key.
        entries_.emplace_back(name, field{v, std::move(key), v.IsNull() ? line_of(k) : line_of(v)});
    }
}

std::optional<field> mapping::get(std::string_view name) const {
    for (const auto& [key, f] : entries_)
        if (key == name)
            return f;
    return std::nullopt;
}

field mapping::require(std::string_view name) const {
    if (auto f = get(name))
        return *f;
    loader_.fail(self_.line, child_key(self_.key, name), "required");
}

std::vector<std::pair<std::string, field>> free_mapping(const loader& l, const field& f) {
    if (!f.node.IsMap())
        l.fail(f, "expected a mapping, got " + describe(f.node));
    std::vector<std::pair<std::string, field>> out;
    for (auto it = f.node.begin(); it != f.node.end(); ++it) {
        const YAML::Node k = it->first;
        const YAML::Node v = it->second;
        if (!k.IsScalar() || k.Scalar().empty())
            l.fail(line_of(k), child_key(f.key, "?"),
                   "keys must be plain strings, got " + describe(k));
        std::string key = child_key(f.key, k.Scalar());
        for (const auto& [name, first] : out)
            if (name == k.Scalar())
                l.fail(line_of(k), key,
                       "duplicate key (first at line " + std::to_string(first.line + 1) + ")");
        out.emplace_back(k.Scalar(),
                         field{v, std::move(key), v.IsNull() ? line_of(k) : line_of(v)});
    }
    return out;
}

std::vector<field> sequence(const loader& l, const field& f) {
    if (!f.node.IsSequence())
        l.fail(f, "expected a sequence, got " + describe(f.node));
    std::vector<field> out;
    std::size_t i = 0;
    for (auto it = f.node.begin(); it != f.node.end(); ++it, ++i) {
        // An empty item has no line of its own; the first one is on the sequence's line.
        int line = it->IsNull() && i == 0 ? f.line : line_of(*it);
        out.push_back(field{*it, f.key + "[" + std::to_string(i) + "]", line});
    }
    return out;
}

// Not YAML::LoadAll: yaml-cpp 0.7's never returns on some inputs (a lone ","), finding one empty
// document after another until memory runs out (jbeder/yaml-cpp#1040, found by the config
// fuzzer). At most two documents are looked for.
YAML::Node the_document(const loader& l, const std::string& yaml) {
    try {
        std::istringstream in(yaml);
        YAML::Parser parser(in);
        document_counter counter;
        for (int i = 0; i < 2 && parser.HandleNextDocument(counter); ++i) {
        }
        if (counter.documents == 0)
            return YAML::Node();
        if (counter.documents > 1)
            l.fail(counter.last_line, "document", "expected one YAML document, found another");
        return YAML::Load(yaml);
    } catch (const YAML::Exception& e) {
        l.fail(std::max(e.mark.line, 0), "invalid YAML", e.msg);
    }
}

}  // namespace coalescer::ops::detail
