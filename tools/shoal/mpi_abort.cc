// FinishGroupCommand (commands.h): reports a group command's error, and is the one place the binary
// ends an MPI job by force.
#include <mpi.h>

#include <cstdio>

#include "comm/mpi/mpi_group.h"
#include "tools/shoal/commands.h"

namespace shoal::cli {

void FinishGroupCommand(const Status& st, const char* command) {
  if (st.ok()) return;
  std::fprintf(stderr, "%s: error: %s\n", command, st.ToString().c_str());
  std::fflush(stderr);
  if (!comm::MpiRuntime::AnyGroupBroken()) return;
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  std::fprintf(stderr, "%s: rank %d ends the job: its group broke with operations in flight\n", command, rank);
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, 1);
}

}  // namespace shoal::cli
