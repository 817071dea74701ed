/* baderror: see bad.inc. */
#define BAD_ERROR 1
#include "bad.inc"
