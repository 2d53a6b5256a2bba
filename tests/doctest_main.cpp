// The tests' main: doctest's, plus two rules that keep a ctest entry from passing without
// having tested anything.
//
// - A run whose filters select no test case fails. doctest_discover_tests makes one ctest
//   entry per test case, filtered by the test's name: a name that ctest splits (a ';' in it)
//   or that the filter cannot match gives an entry that runs nothing, and plain doctest calls
//   that "0 test cases ... SUCCESS". Here it is exit code 1 and a line that says why.
// - A run in which every test case that ran called skip_test() (and none failed) exits 77:
//   tests/CMakeLists.txt gives every entry SKIP_RETURN_CODE 77, so ctest lists it as skipped.
//
// Queries (--list-test-cases, --count, --help, --version) behave as doctest's own.
#define DOCTEST_CONFIG_IMPLEMENT
#include "doctest_main.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <cstdio>
#include <string>
#include <vector>

namespace {

struct run_record {
    bool ran = false;      // a test run (not a query) ended
    unsigned started = 0;  // test cases entered
    unsigned failed = 0;   // test cases that failed
    unsigned skipped = 0;  // test cases that skipped themselves and failed nothing
    std::vector<std::string> skip_reasons;
};

run_record record;
std::atomic<bool> current_skipped{false};
std::string current_reason;
std::string current_name;

class run_watch : public doctest::IReporter {
  public:
    explicit run_watch(const doctest::ContextOptions&) {}
    void report_query(const doctest::QueryData&) override {}
    void test_run_start() override {}
    void test_run_end(const doctest::TestRunStats&) override { record.ran = true; }
    void test_case_start(const doctest::TestCaseData& data) override {
        ++record.started;
        current_skipped = false;
        current_name = data.m_name;
    }
    void test_case_reenter(const doctest::TestCaseData&) override {}
    void test_case_end(const doctest::CurrentTestCaseStats& stats) override {
        if (!stats.testCaseSuccess) {
            ++record.failed;
        } else if (current_skipped) {
            ++record.skipped;
            record.skip_reasons.push_back(current_name + ": " + current_reason);
        }
    }
    void test_case_exception(const doctest::TestCaseException&) override {}
    void subcase_start(const doctest::SubcaseSignature&) override {}
    void subcase_end() override {}
    void log_assert(const doctest::AssertData&) override {}
    void log_message(const doctest::MessageData&) override {}
    void test_case_skipped(const doctest::TestCaseData&) override {}
};

REGISTER_LISTENER("coalescer_run_watch", 1, run_watch);

constexpr int skipped_exit_code = 77;  // SKIP_RETURN_CODE in tests/CMakeLists.txt

}  // namespace

namespace coalescer::test {

void skip_test(std::string_view reason) {
    current_reason = std::string(reason);
    current_skipped = true;
    MESSAGE("SKIPPED: " << current_reason);
}

}  // namespace coalescer::test

int main(int argc, char** argv) {
    doctest::Context context(argc, argv);
    const int result = context.run();
    if (context.shouldExit() || !record.ran) {
        return result;  // a query, or --no-run
    }
    if (record.started == 0) {
        std::fprintf(stderr,
                     "doctest_main: no test case matched the filters, so nothing was tested: "
                     "failing. (Does the test's name contain ';', which ctest splits in two?)\n");
        return 1;
    }
    if (result == 0 && record.failed == 0 && record.skipped == record.started) {
        for (const auto& why : record.skip_reasons) {
            std::fprintf(stderr, "doctest_main: skipped: %s\n", why.c_str());
        }
        return skipped_exit_code;
    }
    if (record.skipped != 0) {
        for (const auto& why : record.skip_reasons) {
            std::fprintf(stderr, "doctest_main: skipped (the run's other test cases ran): %s\n",
                         why.c_str());
        }
    }
    return result;
}
