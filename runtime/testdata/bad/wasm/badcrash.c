/* badcrash: see bad.inc. */
#define BAD_CRASH 1
#include "bad.inc"
