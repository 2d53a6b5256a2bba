// The shipped deployment files (deploy/Dockerfile, deploy/kubernetes/**) checked against what
// the binary and its config really use: the ConfigMap's coalescer.yaml goes through the real
// loader, the probe paths are asked of the real admin server (ops::admin_server, on a socket),
// the ports come from that config, and the image's config path, ports and user from the
// Dockerfile. No cluster and no docker engine are needed.
#include "ops/admin_server.hpp"
#include "ops/config.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

#include <doctest/doctest.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace fs = std::filesystem;
using namespace coalescer::ops;

namespace {

const fs::path source_dir{COALESCER_SOURCE_DIR};
const fs::path manifests_dir = source_dir / "deploy" / "kubernetes";
// The cluster overlay holds patches (partial documents): checked by a test of its own.
const fs::path cluster_dir = manifests_dir / "cluster";
const std::string sidecar_name = "coalescer";  // the sidecar container's name in every Deployment
const std::string config_key = "coalescer.yaml";  // the ConfigMap key holding the config
// terminationGracePeriodSeconds must exceed drain_delay + drain_timeout by at least this (K-05).
constexpr long grace_margin_seconds = 10;

std::string read_text(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    REQUIRE_MESSAGE(in.good(), "cannot read " << path.string());
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

std::string repo_path(const fs::path& path) {
    return fs::relative(path, source_dir).string();
}

std::vector<fs::path> manifest_files() {
    std::vector<fs::path> files;
    for (const auto& entry : fs::recursive_directory_iterator(manifests_dir)) {
        const auto ext = entry.path().extension();
        if (entry.is_regular_file() && (ext == ".yaml" || ext == ".yml")) {
            files.push_back(entry.path());
        }
    }
    std::sort(files.begin(), files.end());
    return files;
}

struct manifest {
    fs::path file;
    YAML::Node node;
};

// Every non-empty document of every YAML file (multi-document files included), the cluster
// overlay's patches aside.
std::vector<manifest> load_manifests() {
    std::vector<manifest> docs;
    for (const auto& file : manifest_files()) {
        if (file.parent_path() == cluster_dir)
            continue;
        for (const auto& node : YAML::LoadAll(read_text(file))) {
            if (!node.IsNull()) {
                docs.push_back({file, node});
            }
        }
    }
    return docs;
}

std::string scalar(const YAML::Node& node) {
    return node && node.IsScalar() ? node.as<std::string>() : "";
}

bool is_number(const std::string& text) {
    return !text.empty() &&
           std::all_of(text.begin(), text.end(), [](unsigned char c) { return std::isdigit(c); });
}

std::optional<long> integer(const YAML::Node& node) {
    const auto text = scalar(node);
    if (!is_number(text))
        return std::nullopt;
    return std::stol(text);
}

// Kubernetes quantities: "512Mi", "1Gi", "500M", "2", "500m".
std::optional<double> quantity(const std::string& text) {
    static const std::vector<std::pair<std::string, double>> suffixes{{"Ki", 1024.0},
                                                                      {"Mi", 1024.0 * 1024},
                                                                      {"Gi", 1024.0 * 1024 * 1024},
                                                                      {"k", 1e3},
                                                                      {"M", 1e6},
                                                                      {"G", 1e9},
                                                                      {"m", 1e-3},
                                                                      {"", 1.0}};
    for (const auto& [suffix, factor] : suffixes) {
        if (text.size() > suffix.size() && text.ends_with(suffix)) {
            const auto number = text.substr(0, text.size() - suffix.size());
            try {
                std::size_t used = 0;
                const double value = std::stod(number, &used);
                if (used == number.size())
                    return value * factor;
            } catch (const std::exception&) {
            }
            return std::nullopt;
        }
    }
    return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// The Dockerfile's final (runtime) stage.

struct dockerfile_stage {
    std::string from;
    std::vector<std::string> expose;      // "8080", "9090"
    std::string user;                     // "65532:65532"
    std::vector<std::string> entrypoint;  // exec form only
    std::vector<std::string> cmd;         // exec form only
    bool entrypoint_exec_form = true;
    bool cmd_exec_form = true;
    std::vector<std::vector<std::string>> copies;  // the words after COPY
};

std::vector<std::string> words(const std::string& text) {
    std::istringstream in(text);
    std::vector<std::string> out;
    for (std::string w; in >> w;)
        out.push_back(w);
    return out;
}

// ["a", "b"] (exec form) → {a, b}; nullopt for the shell form. JSON arrays are YAML.
std::optional<std::vector<std::string>> exec_form(const std::string& text) {
    if (text.empty() || text.front() != '[')
        return std::nullopt;
    const auto node = YAML::Load(text);
    if (!node.IsSequence())
        return std::nullopt;
    std::vector<std::string> out;
    for (const auto& item : node)
        out.push_back(item.as<std::string>());
    return out;
}

dockerfile_stage parse_dockerfile(const std::string& text) {
    // Logical lines: comment lines dropped (also inside a continuation), "\" joins lines.
    std::vector<std::string> lines;
    std::istringstream in(text);
    std::string pending;
    for (std::string line; std::getline(in, line);) {
        if (!line.empty() && line.back() == '\r')
            line.pop_back();
        const auto first = line.find_first_not_of(" \t");
        if (first == std::string::npos || line[first] == '#')
            continue;
        if (line.back() == '\\') {
            pending += line.substr(0, line.size() - 1) + " ";
            continue;
        }
        lines.push_back(pending + line);
        pending.clear();
    }
    if (!pending.empty())
        lines.push_back(pending);

    dockerfile_stage stage;
    for (const auto& line : lines) {
        const auto first = line.find_first_not_of(" \t");
        const auto end = line.find_first_of(" \t", first);
        std::string instruction = line.substr(first, end - first);
        std::transform(instruction.begin(), instruction.end(), instruction.begin(),
                       [](unsigned char c) { return std::toupper(c); });
        const auto rest_at =
            end == std::string::npos ? line.size() : line.find_first_not_of(" \t", end);
        std::string rest = rest_at == std::string::npos ? "" : line.substr(rest_at);
        while (!rest.empty() && std::isspace(static_cast<unsigned char>(rest.back())))
            rest.pop_back();
        if (instruction == "FROM") {
            stage = dockerfile_stage{};  // a new stage: only the last one is the image
            stage.from = rest;
        } else if (instruction == "EXPOSE") {
            for (auto port : words(rest)) {
                if (const auto slash = port.find('/'); slash != std::string::npos)
                    port.resize(slash);
                stage.expose.push_back(port);
            }
        } else if (instruction == "USER") {
            stage.user = rest;
        } else if (instruction == "ENTRYPOINT") {
            const auto form = exec_form(rest);
            stage.entrypoint_exec_form = form.has_value();
            stage.entrypoint = form.value_or(std::vector<std::string>{});
        } else if (instruction == "CMD") {
            const auto form = exec_form(rest);
            stage.cmd_exec_form = form.has_value();
            stage.cmd = form.value_or(std::vector<std::string>{});
        } else if (instruction == "COPY") {
            stage.copies.push_back(words(rest));
        }
    }
    return stage;
}

dockerfile_stage runtime_stage() {
    return parse_dockerfile(read_text(source_dir / "deploy" / "Dockerfile"));
}

// The value after --config in ENTRYPOINT + CMD ("" when there is none).
std::string image_config_path(const dockerfile_stage& stage) {
    std::vector<std::string> argv = stage.entrypoint;
    argv.insert(argv.end(), stage.cmd.begin(), stage.cmd.end());
    for (std::size_t i = 0; i + 1 < argv.size(); ++i) {
        if (argv[i] == "--config")
            return argv[i + 1];
    }
    return "";
}

// ---------------------------------------------------------------------------------------------
// The ConfigMap and the Deployments.

struct shipped_config {
    std::string configmap_name;
    std::string text;  // the embedded coalescer.yaml
    YAML::Node raw;    // the same, as YAML (to see which keys are written out)
    std::shared_ptr<const config> loaded;
};

shipped_config load_shipped_config(const std::vector<manifest>& docs) {
    std::vector<shipped_config> found;
    for (const auto& doc : docs) {
        if (scalar(doc.node["kind"]) == "ConfigMap" && doc.node["data"] &&
            doc.node["data"][config_key]) {
            shipped_config c;
            c.configmap_name = scalar(doc.node["metadata"]["name"]);
            c.text = scalar(doc.node["data"][config_key]);
            found.push_back(c);
        }
    }
    REQUIRE_MESSAGE(found.size() == 1, "expected one ConfigMap with data."
                                           << config_key << ", found " << found.size());
    auto c = found.front();
    c.raw.reset(YAML::Load(c.text));
    c.loaded = load_config_text(
        c.text, "deploy/kubernetes ConfigMap " + c.configmap_name + " " + config_key);
    return c;
}

struct workload {
    fs::path file;
    std::string name;
    YAML::Node pod;       // spec.template.spec
    YAML::Node sidecar;   // the coalescer container
    bool native = false;  // in initContainers (restartPolicy: Always), else a regular container
    int sidecars_found = 0;
};

std::vector<workload> load_workloads(const std::vector<manifest>& docs) {
    std::vector<workload> out;
    for (const auto& doc : docs) {
        if (scalar(doc.node["kind"]) != "Deployment")
            continue;
        workload w;
        w.file = doc.file;
        w.name = scalar(doc.node["metadata"]["name"]);
        w.pod.reset(doc.node["spec"]["template"]["spec"]);
        for (const char* list : {"initContainers", "containers"}) {
            if (!w.pod[list])
                continue;
            for (const auto& c : w.pod[list]) {
                if (scalar(c["name"]) == sidecar_name) {
                    w.sidecar.reset(c);
                    w.native = std::string(list) == "initContainers";
                    ++w.sidecars_found;
                }
            }
        }
        out.push_back(w);
    }
    return out;
}

// The containers other than the sidecar (the application).
std::vector<YAML::Node> app_containers(const workload& w) {
    std::vector<YAML::Node> out;
    if (w.pod["containers"]) {
        for (const auto& c : w.pod["containers"]) {
            if (scalar(c["name"]) != sidecar_name)
                out.push_back(c);
        }
    }
    return out;
}

// A probe's port: a number, or the name of one of the container's ports.
std::optional<long> resolve_port(const YAML::Node& container, const YAML::Node& port) {
    if (const auto n = integer(port))
        return n;
    const auto name = scalar(port);
    if (container["ports"]) {
        for (const auto& p : container["ports"]) {
            if (scalar(p["name"]) == name)
                return integer(p["containerPort"]);
        }
    }
    return std::nullopt;
}

// What the sidecar's admin server answers to a kubelet's GET of `path` (status code), with the
// sidecar ready or not (starting, draining). The real server on a real socket: a probe path
// it does not serve is a 404 here, whatever the source text says.
unsigned probe_status(const std::string& path, bool ready) {
    namespace asio = boost::asio;
    namespace beast_http = boost::beast::http;
    asio::io_context io;
    admin_server admin(io, "127.0.0.1", 0,
                       admin_handlers{[ready] { return ready; }, [] { return std::string(); }});
    admin.start();
    std::thread loop([&] { io.run(); });
    unsigned status = 0;
    try {
        asio::io_context client_io;
        asio::ip::tcp::socket socket(client_io);
        socket.connect({asio::ip::make_address("127.0.0.1"), admin.port()});
        beast_http::request<beast_http::empty_body> req{beast_http::verb::get, path, 11};
        req.set(beast_http::field::host, "127.0.0.1");
        req.set(beast_http::field::user_agent, "kube-probe/1.29");
        req.keep_alive(false);
        beast_http::write(socket, req);
        boost::beast::flat_buffer buffer;
        beast_http::response<beast_http::string_body> res;
        beast_http::read(socket, buffer, res);
        status = res.result_int();
    } catch (const std::exception& e) {
        FAIL_CHECK("probe " << path << ": " << e.what());
    }
    admin.stop();
    io.stop();
    loop.join();
    return status;
}

std::optional<long> seconds(duration d) {
    if (d.count() % 1000 != 0)
        return std::nullopt;
    return static_cast<long>(d.count() / 1000);
}

}  // namespace

// ---------------------------------------------------------------------------------------------

TEST_CASE(
    "deploy: every YAML file under deploy/kubernetes parses, and kustomize finds its resources") {
    const auto files = manifest_files();
    REQUIRE(files.size() >=
            6);  // base/{kustomization,configmap}, two overlays × {kustomization,deployment}
    for (const auto& file : files) {
        CAPTURE(repo_path(file));
        std::vector<YAML::Node> docs;
        CHECK_NOTHROW(docs = YAML::LoadAll(read_text(file)));
        CHECK(!docs.empty());
        for (const auto& doc : docs) {
            if (doc.IsNull())
                continue;
            CHECK(doc.IsMap());
            CHECK_FALSE(scalar(doc["apiVersion"]).empty());
            CHECK_FALSE(scalar(doc["kind"]).empty());
            if (scalar(doc["kind"]) == "Kustomization" && doc["resources"]) {
                for (const auto& resource : doc["resources"]) {
                    CAPTURE(scalar(resource));
                    CHECK(fs::exists(file.parent_path() / scalar(resource)));
                }
            }
        }
    }
    // Both examples exist and are kustomizations.
    CHECK(fs::exists(manifests_dir / "native-sidecar" / "kustomization.yaml"));
    CHECK(fs::exists(manifests_dir / "classic-sidecar" / "kustomization.yaml"));
}

TEST_CASE("deploy: the ConfigMap's coalescer.yaml loads and is right for a pod") {
    const auto docs = load_manifests();
    shipped_config c;
    REQUIRE_NOTHROW(c = load_shipped_config(docs));
    const auto& cfg = *c.loaded;
    // Only the app container of the same pod may call the proxy; the kubelet probes the pod IP.
    CHECK(cfg.listen.address == "127.0.0.1");
    CHECK((cfg.admin.address == "0.0.0.0" || cfg.admin.address == "::"));
    CHECK(cfg.listen.port != cfg.admin.port);
    CHECK(cfg.listen.port > 1024);
    CHECK(cfg.admin.port > 1024);
    // The drain is written out, not left to defaults the manifests can't see.
    CHECK(c.raw["shutdown"]["drain_delay"]);
    CHECK(c.raw["shutdown"]["drain_timeout"]);
    // On a cgroup v1 node, workers: 0 would mean one thread per core of the node: set it.
    CHECK(c.raw["workers"]);
    CHECK(cfg.workers > 0);
    // Upstream TLS verification stays on in the shipped config.
    for (const auto& up : cfg.upstreams) {
        CAPTURE(up.name);
        CHECK((!up.https || up.tls.verify));
    }
}

TEST_CASE(
    "deploy: the Dockerfile's image runs coalescer as a non-root user with the config the pods "
    "mount") {
    const auto stage = runtime_stage();
    CAPTURE(stage.from);
    // Exec form: the runtime image has no shell to run the shell form.
    CHECK(stage.entrypoint_exec_form);
    CHECK(stage.cmd_exec_form);
    REQUIRE_FALSE(stage.entrypoint.empty());
    CHECK(fs::path(stage.entrypoint.front()).filename() == "coalescer");
    // The binary is copied to where ENTRYPOINT runs it.
    bool binary_copied = false;
    for (const auto& copy : stage.copies) {
        binary_copied = binary_copied || (!copy.empty() && copy.back() == stage.entrypoint.front());
    }
    CHECK_MESSAGE(binary_copied,
                  "no COPY in the final stage puts the binary at " << stage.entrypoint.front());
    CHECK(image_config_path(stage) == "/etc/coalescer/" + config_key);
    // USER uid[:gid], numeric (so the kubelet can check runAsNonRoot) and not root.
    const auto uid = stage.user.substr(0, stage.user.find(':'));
    CAPTURE(stage.user);
    REQUIRE(is_number(uid));
    CHECK(std::stol(uid) != 0);

    const auto docs = load_manifests();
    const auto c = load_shipped_config(docs);
    const std::set<std::string> exposed(stage.expose.begin(), stage.expose.end());
    CHECK(exposed.count(std::to_string(c.loaded->listen.port)) == 1);
    CHECK(exposed.count(std::to_string(c.loaded->admin.port)) == 1);
}

TEST_CASE("deploy: the admin server answers the probe paths as the probes need") {
    // Liveness and startup: alive whether or not ready. Readiness: 503 while starting or
    // draining, so that the pod leaves the Service's endpoints.
    CHECK(probe_status("/healthz", true) == 200);
    CHECK(probe_status("/healthz", false) == 200);
    CHECK(probe_status("/readyz", true) == 200);
    CHECK(probe_status("/readyz", false) == 503);
    CHECK(probe_status("/no-such-probe", true) == 404);  // the check can fail
}

TEST_CASE("deploy: each Deployment runs the sidecar as its config and its image expect") {
    const auto docs = load_manifests();
    const auto c = load_shipped_config(docs);
    const auto& cfg = *c.loaded;
    const auto stage = runtime_stage();
    const auto workloads = load_workloads(docs);
    REQUIRE(workloads.size() >= 2);

    int native = 0;
    int classic = 0;
    for (const auto& w : workloads) {
        CAPTURE(repo_path(w.file));
        CAPTURE(w.name);
        REQUIRE(w.sidecars_found == 1);
        const auto& s = w.sidecar;
        (w.native ? native : classic) += 1;

        // Placement: an init container is a sidecar only with restartPolicy: Always; without it
        // the pod would wait forever for coalescer to exit before starting the app.
        if (w.native) {
            CHECK(scalar(s["restartPolicy"]) == "Always");
        } else {
            CHECK_FALSE(s["restartPolicy"]);
        }
        // The image's name is what the overlays' `images:` retag.
        CHECK(scalar(s["image"]).substr(0, scalar(s["image"]).find(':')) == "coalescer");

        // Ports: exactly the config's listen and admin ports.
        std::set<long> ports;
        if (s["ports"]) {
            for (const auto& p : s["ports"]) {
                if (const auto n = integer(p["containerPort"]))
                    ports.insert(*n);
            }
        }
        CHECK(ports == std::set<long>{cfg.listen.port, cfg.admin.port});

        // Probes: on the admin port, on paths the admin server answers, timings explicit.
        const std::vector<std::pair<const char*, std::string>> probes{
            {"startupProbe", "/healthz"},
            {"livenessProbe", "/healthz"},
            {"readinessProbe", "/readyz"}};
        for (const auto& [probe_name, expected_path] : probes) {
            CAPTURE(probe_name);
            const auto probe = s[probe_name];
            REQUIRE(probe);
            REQUIRE(probe["httpGet"]);
            const auto path = scalar(probe["httpGet"]["path"]);
            CHECK(path == expected_path);
            CHECK(probe_status(path, true) == 200);  // the admin server serves it
            CHECK(resolve_port(s, probe["httpGet"]["port"]) == std::optional<long>(cfg.admin.port));
            if (probe["httpGet"]["scheme"])
                CHECK(scalar(probe["httpGet"]["scheme"]) == "HTTP");
            for (const char* field : {"periodSeconds", "timeoutSeconds", "failureThreshold"}) {
                CAPTURE(field);
                CHECK(integer(probe[field]).value_or(0) > 0);
            }
        }

        // The image's CMD reads the mounted config: no command override, and args, if any, agree.
        CHECK_FALSE(s["command"]);
        if (s["args"]) {
            std::vector<std::string> args;
            for (const auto& a : s["args"])
                args.push_back(scalar(a));
            const auto at = std::find(args.begin(), args.end(), "--config");
            REQUIRE(at != args.end());
            REQUIRE(at + 1 != args.end());
            CHECK(*(at + 1) == image_config_path(stage));
        }

        // The ConfigMap is mounted so that mountPath/key is the image's --config path.
        std::string mounted;
        if (s["volumeMounts"] && w.pod["volumes"]) {
            for (const auto& m : s["volumeMounts"]) {
                for (const auto& v : w.pod["volumes"]) {
                    if (scalar(v["name"]) != scalar(m["name"]) || !v["configMap"])
                        continue;
                    if (scalar(v["configMap"]["name"]) != c.configmap_name)
                        continue;
                    std::string file = config_key;
                    if (v["configMap"]["items"]) {
                        file.clear();
                        for (const auto& item : v["configMap"]["items"]) {
                            if (scalar(item["key"]) == config_key)
                                file = scalar(item["path"]);
                        }
                    }
                    if (m["subPath"])
                        file = "";  // a subPath mount is the file itself
                    mounted =
                        file.empty() ? scalar(m["mountPath"]) : scalar(m["mountPath"]) + "/" + file;
                    CHECK(scalar(m["readOnly"]) == "true");
                }
            }
        }
        CHECK(mounted == image_config_path(stage));

        // Grace period: the whole drain plus a margin, or SIGKILL cuts streams (K-05).
        const auto delay = seconds(cfg.shutdown.drain_delay);
        const auto timeout = seconds(cfg.shutdown.drain_timeout);
        REQUIRE(delay);
        REQUIRE(timeout);
        const auto grace = integer(w.pod["terminationGracePeriodSeconds"]);
        REQUIRE(grace);
        CHECK(*grace >= *delay + *timeout + grace_margin_seconds);

        // securityContext (Pod Security Standards "restricted"), on the container itself.
        const auto sc = s["securityContext"];
        REQUIRE(sc);
        CHECK(scalar(sc["runAsNonRoot"]) == "true");
        CHECK(integer(sc["runAsUser"]) == std::optional<long>(65532));
        CHECK(scalar(sc["runAsUser"]) == stage.user.substr(0, stage.user.find(':')));
        CHECK(scalar(sc["readOnlyRootFilesystem"]) == "true");
        CHECK(scalar(sc["allowPrivilegeEscalation"]) == "false");
        CHECK(scalar(sc["seccompProfile"]["type"]) == "RuntimeDefault");
        bool drops_all = false;
        if (sc["capabilities"] && sc["capabilities"]["drop"]) {
            for (const auto& cap : sc["capabilities"]["drop"])
                drops_all = drops_all || scalar(cap) == "ALL";
        }
        CHECK(drops_all);
        CHECK_FALSE(sc["capabilities"]["add"]);

        // Resources: requests and limits; the config fits the limits (K-08, workers).
        const auto res = s["resources"];
        for (const char* kind : {"requests", "limits"}) {
            for (const char* what : {"cpu", "memory"}) {
                CAPTURE(kind);
                CAPTURE(what);
                CHECK(quantity(scalar(res[kind][what])).has_value());
            }
        }
        const auto memory_limit = quantity(scalar(res["limits"]["memory"]));
        const auto cpu_limit = quantity(scalar(res["limits"]["cpu"]));
        if (memory_limit) {
            CHECK(static_cast<double>(cfg.coalesce.max_cache_bytes) <= 0.75 * *memory_limit);
        }
        if (cpu_limit) {
            CHECK(cfg.workers <= static_cast<unsigned>(std::ceil(*cpu_limit)));
        }

        // The application: its provider base URLs point at the proxy's port on the loopback,
        // and it takes neither of the sidecar's ports (the pod shares one network namespace).
        const auto apps = app_containers(w);
        REQUIRE_FALSE(apps.empty());
        const std::string proxy_url = "http://127.0.0.1:" + std::to_string(cfg.listen.port);
        int base_urls = 0;
        for (const auto& app : apps) {
            CAPTURE(scalar(app["name"]));
            if (app["env"]) {
                for (const auto& e : app["env"]) {
                    const auto name = scalar(e["name"]);
                    if (!name.ends_with("_BASE_URL"))
                        continue;
                    CAPTURE(name);
                    const auto value = scalar(e["value"]);
                    CHECK((value == proxy_url || value.starts_with(proxy_url + "/")));
                    ++base_urls;
                }
            }
            if (app["ports"]) {
                for (const auto& p : app["ports"]) {
                    const auto n = integer(p["containerPort"]).value_or(0);
                    CHECK(n != cfg.listen.port);
                    CHECK(n != cfg.admin.port);
                }
            }
        }
        CHECK(base_urls > 0);
    }
    CHECK(native >= 1);
    CHECK(classic >= 1);
}

TEST_CASE("deploy: the cluster overlay's config points at its Redis and mounts the key secret") {
    const auto patch = YAML::LoadFile((cluster_dir / "coalescer-config.yaml").string());
    CHECK(scalar(patch["kind"]) == "ConfigMap");
    CHECK(scalar(patch["metadata"]["name"]) == "coalescer-config");
    auto text = scalar(patch["data"][config_key]);
    // The secret's path inside the pod, swapped for a file here so that the loader can read it.
    const std::string mounted = "/etc/coalescer/key-secret";
    const auto at = text.find(mounted);
    REQUIRE(at != std::string::npos);
    const auto local =
        fs::temp_directory_path() / ("coalescer-overlay-secret-" + std::to_string(::getpid()));
    std::ofstream(local) << "overlay-test-secret\n";
    text.replace(at, mounted.size(), local.string());
    std::shared_ptr<const config> cfg;
    CHECK_NOTHROW(cfg = load_config_text(text, "deploy/kubernetes/cluster ConfigMap"));
    fs::remove(local);
    REQUIRE(cfg);
    REQUIRE(cfg->cluster);
    // The rest is the base's config: the overlay only adds the cluster section.
    const auto base = load_shipped_config(load_manifests());
    CHECK(cfg->upstreams.size() == base.loaded->upstreams.size());
    CHECK(cfg->routes.size() == base.loaded->routes.size());
    CHECK(cfg->listen.port == base.loaded->listen.port);

    // Its Redis is the overlay's Service, a StatefulSet behind it (not an app Deployment).
    std::set<std::string> kinds;
    std::string service;
    for (const auto& doc : YAML::LoadAll(read_text(cluster_dir / "redis.yaml"))) {
        kinds.insert(scalar(doc["kind"]));
        if (scalar(doc["kind"]) == "Service") {
            service = scalar(doc["metadata"]["name"]);
            CHECK(integer(doc["spec"]["ports"][0]["port"]) == cfg->cluster->port);
        }
    }
    CHECK(kinds == std::set<std::string>{"StatefulSet", "Service"});
    CHECK(cfg->cluster->host == service);

    // The key secret lands next to the config: the sidecar's config volume projects both.
    const auto volume = YAML::LoadFile((cluster_dir / "sidecar-volume.yaml").string());
    const auto sources = volume["spec"]["template"]["spec"]["volumes"][0]["projected"]["sources"];
    REQUIRE(sources.IsSequence());
    CHECK(scalar(sources[0]["configMap"]["name"]) == "coalescer-config");
    CHECK(scalar(sources[1]["secret"]["name"]) == "coalescer-key-secret");
    const auto kustomization = YAML::LoadFile((cluster_dir / "kustomization.yaml").string());
    CHECK(scalar(kustomization["secretGenerator"][0]["name"]) == "coalescer-key-secret");
    CHECK(scalar(kustomization["secretGenerator"][0]["files"][0]) == "key-secret");
    // The patched Deployment is one the overlay's base has.
    bool found = false;
    for (const auto& w : load_workloads(load_manifests()))
        found = found || w.name == scalar(volume["metadata"]["name"]);
    CHECK(found);
}
