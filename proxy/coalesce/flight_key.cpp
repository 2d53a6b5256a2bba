#include "coalesce/flight_key.hpp"

#include "http/header_rules.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <stdexcept>

namespace coalescer::coalesce {

namespace {

constexpr std::string_view key_format_version = "coalescer-key-v2";
constexpr std::size_t sha256_size = 32;
constexpr std::size_t sha256_block = 64;

// OpenSSL only fails here when it cannot allocate: a key computed wrongly could merge tenants, so
// the process stops rather than guess.
[[noreturn]] void crypto_failure(const char* what) {
    std::fprintf(stderr, "coalescer: fatal: OpenSSL %s failed\n", what);
    std::abort();
}

// Fetched once: EVP_sha256() would make every EVP_DigestInit_ex2 fetch the implementation again.
const EVP_MD* sha256_md() {
    static const EVP_MD* const md = [] {
        const EVP_MD* m = EVP_MD_fetch(nullptr, "SHA256", nullptr);  // kept for the process
        return m != nullptr ? m : EVP_sha256();
    }();
    return md;
}

class digest_ctx {
  public:
    digest_ctx() : ctx_(EVP_MD_CTX_new()) {
        if (ctx_ == nullptr)
            crypto_failure("EVP_MD_CTX_new");
    }
    ~digest_ctx() { EVP_MD_CTX_free(ctx_); }
    digest_ctx(const digest_ctx&) = delete;
    digest_ctx& operator=(const digest_ctx&) = delete;

    void init() {
        if (EVP_DigestInit_ex2(ctx_, sha256_md(), nullptr) != 1)
            crypto_failure("EVP_DigestInit_ex2");
    }
    void copy_from(const digest_ctx& other) {
        if (EVP_MD_CTX_copy_ex(ctx_, other.ctx_) != 1)
            crypto_failure("EVP_MD_CTX_copy_ex");
    }
    void update(const void* data, std::size_t size) {
        if (size != 0 && EVP_DigestUpdate(ctx_, data, size) != 1)
            crypto_failure("EVP_DigestUpdate");
    }
    void update(std::string_view s) { update(s.data(), s.size()); }
    void final(unsigned char* out) {
        unsigned int n = 0;
        if (EVP_DigestFinal_ex(ctx_, out, &n) != 1 || n != sha256_size)
            crypto_failure("EVP_DigestFinal_ex");
    }

  private:
    EVP_MD_CTX* ctx_;
};

// HMAC-SHA256 (RFC 2104) with the key's inner and outer pads absorbed once.
class keyed_hmac {
  public:
    explicit keyed_hmac(std::string_view key) {
        unsigned char block[sha256_block] = {};
        if (key.size() > sha256_block) {
            digest_ctx d;
            d.init();
            d.update(key);
            d.final(block);
        } else if (!key.empty()) {
            std::memcpy(block, key.data(), key.size());
        }
        unsigned char pad[sha256_block];
        for (std::size_t i = 0; i < sha256_block; ++i)
            pad[i] = block[i] ^ 0x36;
        inner_.init();
        inner_.update(pad, sizeof pad);
        for (std::size_t i = 0; i < sha256_block; ++i)
            pad[i] = block[i] ^ 0x5c;
        outer_.init();
        outer_.update(pad, sizeof pad);
    }

    void begin() { work_.copy_from(inner_); }
    void update(std::string_view s) { work_.update(s); }
    void finish(unsigned char* out) {
        unsigned char inner_digest[sha256_size];
        work_.final(inner_digest);
        work_.copy_from(outer_);
        work_.update(inner_digest, sizeof inner_digest);
        work_.final(out);
    }

  private:
    digest_ctx inner_;
    digest_ctx outer_;
    digest_ctx work_;
};

// 32 random bytes, made once per process. Throws (start-up: the builder's constructor) when the
// random generator fails; a later call retries.
const std::array<unsigned char, 32>& process_secret() {
    static const std::array<unsigned char, 32> secret = [] {
        std::array<unsigned char, 32> s{};
        if (RAND_bytes(s.data(), static_cast<int>(s.size())) != 1)
            throw std::runtime_error("coalesce key: RAND_bytes failed to make the process secret");
        return s;
    }();
    return secret;
}

std::uint64_t next_builder() noexcept {
    static std::atomic<std::uint64_t> n{0};
    return ++n;
}

// Per-thread scratch: contexts and buffers reused by every make() on the thread. The credential
// HMAC's pads belong to one builder's secret: made again when another builder keys here.
struct thread_state {
    std::uint64_t mac_builder = 0;
    std::optional<keyed_hmac> credential_mac;
    digest_ctx digest;
    json_canonicalizer canonicalizer;
    std::string fields;                                                // everything before the body
    std::vector<std::pair<std::string, std::string_view>> identities;  // scratch
};

thread_state& local_state() {
    thread_local thread_state state;
    return state;
}

void append_length(std::string& out, std::uint64_t n) {
    char bytes[8];
    for (int i = 0; i < 8; ++i)
        bytes[i] = static_cast<char>((n >> (8 * i)) & 0xff);
    out.append(bytes, sizeof bytes);
}

void append_field(std::string& out, std::string_view bytes) {
    append_length(out, bytes.size());
    out.append(bytes);
}

char lower(char c) noexcept {
    return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

// `lowered` is already lower case.
bool name_equals(std::string_view name, std::string_view lowered) noexcept {
    if (name.size() != lowered.size())
        return false;
    for (std::size_t i = 0; i < name.size(); ++i)
        if (lower(name[i]) != lowered[i])
            return false;
    return true;
}

using header_list = std::vector<std::pair<std::string_view, std::string_view>>;

constexpr std::string_view absent_marker("\x00", 1);
constexpr std::string_view present_marker("\x01", 1);

// Every header that names the tenant, by lower-case name in byte order (several lines of one
// name, refused by the validator anyway, are joined with "\n" in arrival order): the count, then
// each name and the HMAC of its value. Only present headers are listed, so a credential header
// nobody configured still separates tenants.
void append_identities(std::string& out, keyed_hmac& mac, const header_list* headers,
                       const tenant_headers& rule,
                       std::vector<std::pair<std::string, std::string_view>>& found) {
    found.clear();
    if (headers != nullptr) {
        for (const auto& [name, value] : *headers) {
            if (rule.is_identity(name))
                found.emplace_back(http::lower_case(name), value);
        }
    }
    std::stable_sort(found.begin(), found.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    std::size_t names = 0;
    for (std::size_t i = 0; i < found.size(); ++i)
        names += i == 0 || found[i].first != found[i - 1].first;
    append_length(out, names);
    for (std::size_t i = 0; i < found.size();) {
        const std::string& name = found[i].first;
        append_field(out, name);
        mac.begin();
        mac.update(found[i].second);
        for (++i; i < found.size() && found[i].first == name; ++i) {
            mac.update("\n");
            mac.update(found[i].second);
        }
        unsigned char digest[sha256_size];
        mac.finish(digest);
        append_field(out, std::string_view(reinterpret_cast<const char*>(digest), sizeof digest));
    }
}

void append_vary(std::string& out, const header_list* headers, std::string_view name) {
    append_field(out, name);
    std::size_t count = 0, total = 0;
    if (headers != nullptr) {
        for (const auto& [n, value] : *headers) {
            if (!name_equals(n, name))
                continue;
            total += value.size() + (count == 0 ? 0 : 1);
            ++count;
        }
    }
    if (count == 0) {
        append_field(out, absent_marker);
        return;
    }
    append_field(out, present_marker);
    append_length(out, total);
    bool first = true;
    for (const auto& [n, value] : *headers) {
        if (!name_equals(n, name))
            continue;
        if (!first)
            out.push_back('\n');
        first = false;
        out.append(value);
    }
}

}  // namespace

// ---------------------------------------------------------------------------------------------

std::string flight_key::hex() const {
    static constexpr char digits[] = "0123456789abcdef";
    std::string out(digest.size() * 2, '0');
    for (std::size_t i = 0; i < digest.size(); ++i) {
        out[2 * i] = digits[digest[i] >> 4];
        out[2 * i + 1] = digits[digest[i] & 0xf];
    }
    return out;
}

std::string flight_key::prefix() const {
    return hex().substr(0, 12);
}

std::size_t flight_key_hash::operator()(const flight_key& key) const noexcept {
    std::size_t h = 0;
    std::memcpy(&h, key.digest.data(), sizeof h);  // the digest is uniformly distributed already
    return h;
}

flight_key_builder::flight_key_builder(const ops::coalesce_config& cfg, std::string_view secret)
    : tenants_(cfg), ignore_(cfg.ignore_fields), id_(next_builder()) {
    if (secret.empty()) {
        const auto& random = process_secret();  // made now, where failing may throw
        secret_.assign(reinterpret_cast<const char*>(random.data()), random.size());
    } else {
        secret_.assign(secret);
    }
    std::string pointers;
    for (const auto& pointer : ignore_.pointers())
        append_field(pointers, pointer);
    append_field(fingerprint_, pointers);
}

flight_key_builder::~flight_key_builder() {
    OPENSSL_cleanse(secret_.data(), secret_.size());
}

flight_key flight_key_builder::make(const key_request& request) const {
    body_kind kind;
    return make(request, kind);
}

flight_key flight_key_builder::make(const key_request& request, body_kind& kind) const {
    thread_state& st = local_state();
    std::string& fields = st.fields;
    fields.clear();
    append_field(fields, key_format_version);
    fields.append(fingerprint_);
    append_field(fields, request.upstream);
    append_field(fields, request.method);
    append_field(fields, request.target);
    if (st.mac_builder != id_) {
        st.credential_mac.emplace(secret_);
        st.mac_builder = id_;
    }
    append_identities(fields, *st.credential_mac, request.headers, tenants_, st.identities);
    for (const auto& name : tenants_.vary())
        append_vary(fields, request.headers, name);

    const bool json = !request.body.empty() && st.canonicalizer.run(request.body, ignore_);
    kind = json ? body_kind::json : body_kind::raw;
    append_field(fields, json ? "json" : "raw");
    append_length(fields, json ? st.canonicalizer.size() : request.body.size());

    flight_key key;
    st.digest.init();
    st.digest.update(fields);
    if (json) {
        // In pieces when a large object's members are handed over in order, not copied.
        st.canonicalizer.write(
            [](void* digest, std::string_view piece) {
                static_cast<digest_ctx*>(digest)->update(piece);
            },
            &st.digest);
    } else {
        st.digest.update(request.body);
    }
    st.digest.final(key.digest.data());
    if (fields.capacity() > 64 * 1024)
        std::string().swap(fields);  // huge header values: don't pin
    if (request.body.size() > 4 * 1024 * 1024)
        st.canonicalizer.release_large();  // nor huge bodies
    return key;
}

namespace detail {

std::array<unsigned char, 32> hmac_sha256(std::string_view key, std::string_view message) {
    keyed_hmac mac(key);
    mac.begin();
    mac.update(message);
    std::array<unsigned char, 32> out{};
    mac.finish(out.data());
    return out;
}

}  // namespace detail

}  // namespace coalescer::coalesce
