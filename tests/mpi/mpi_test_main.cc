#include "tests/mpi/mpi_test_main.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <memory>

namespace shoal::testing {

namespace {

std::unique_ptr<comm::MpiGroup> g_world;

// For ranks other than 0: one line per failed assertion, so a failure on any rank is visible.
class RankFailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& r) override {
    if (!r.failed()) return;
    std::fprintf(stderr, "[rank %d] %s:%d: failure\n%s\n", rank_, r.file_name() ? r.file_name() : "?",
                 r.line_number(), r.summary());
  }

 private:
  int rank_;
};

}  // namespace

comm::MpiGroup& World() { return *g_world; }

std::unique_ptr<comm::MpiGroup> NewWorldGroup() {
  auto g = comm::MpiGroup::Create(MPI_COMM_WORLD);
  return g.ok() ? std::move(g).value() : nullptr;
}

}  // namespace shoal::testing

int main(int argc, char** argv) {
  auto runtime = shoal::comm::MpiRuntime::Init(&argc, &argv);
  if (!runtime.ok()) {
    std::fprintf(stderr, "%s\n", runtime.status().ToString().c_str());
    return 1;
  }
  shoal::testing::g_world = shoal::testing::NewWorldGroup();
  if (!shoal::testing::g_world) {
    std::fprintf(stderr, "cannot create the world group\n");
    return 1;
  }
  ::testing::InitGoogleTest(&argc, argv);
  const int rank = shoal::testing::World().rank();
  if (rank != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new shoal::testing::RankFailurePrinter(rank));
  }
  int failed = RUN_ALL_TESTS() != 0 ? 1 : 0;
  // Every rank's verdict, so mpirun's exit code does not depend on which rank failed. A blocking
  // reduction is fine here: every rank reaches it unless a test hung, which ctest's timeout catches.
  int any_failed = failed;
  MPI_Allreduce(&failed, &any_failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  shoal::testing::g_world.reset();
  return any_failed;
}
