/* badhang: see bad.inc. */
#define BAD_HANG 1
#include "bad.inc"
