// FinishGroupCommand (commands.h): reports a group command's error, and is the one place the binary
// ends an MPI job by force.
#include <mpi.h>


#include "comm/mpi/mpi_group.h"
#include "common/log.h"
#include "tools/shoal/commands.h"

namespace shoal::cli {

void FinishGroupCommand(const Status& st, const char* command) {
  if (st.ok()) return;
  log::Error("%s: %s", command, st.ToString().c_str());
  if (!comm::MpiRuntime::AnyGroupBroken()) return;
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  log::Error("%s: rank %d ends the job: its group broke with operations in flight", command, rank);
  MPI_Abort(MPI_COMM_WORLD, 1);
}

}  // namespace shoal::cli
