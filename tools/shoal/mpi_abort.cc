// AbortIfGroupBroken (commands.h): the one place the binary ends an MPI job by force.
#include <mpi.h>

#include <cstdio>

#include "comm/mpi/mpi_group.h"
#include "tools/shoal/commands.h"

namespace shoal::cli {

void AbortIfGroupBroken(const Status& st, const char* command) {
  if (st.ok() || !comm::MpiRuntime::AnyGroupBroken()) return;
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  std::fprintf(stderr, "%s: error: %s\n%s: rank %d ends the job: its group broke with operations in flight\n", command,
               st.ToString().c_str(), command, rank);
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, 1);
}

}  // namespace shoal::cli
