/*
 * mlopsd: streaming feature store and MLOps pipeline daemon.  main() only
 * hands the command line to the command table (cmd.c).
 */
#include "cmd/cmd.h"

int
main(int argc, char **argv)
{
	return cmd_main(argc, argv);
}
