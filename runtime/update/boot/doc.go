// Package boot is the small bootloader interface behind Perch's A/B updates, with a
// power-cut-safe file-backed implementation and implementations for real boxes.
//
// # Overview
//
// A box has two slots, A and B. The [Loader] interface is what the update agent needs from a
// bootloader: which slot booted and which is the committed fallback ([Loader.Status]), boot
// the other slot next, at most n times ([Loader.TryNext]: the boot counter), and commit the
// booted slot ([Loader.MarkGood]). When a trial's counter runs out before MarkGood, the
// loader falls back to the committed slot: the rollback.
//
// # State machine
//
// The state is (committed C, trial T with n boots left, booted S). Writes are atomic: after
// a power cut the state is the one before or after the write, never a mix.
//
//	                    TryNext(T, n)            Boot: n > 0 → n-1, S = T
//	committed ────────────────────────► pending ──────────────────────────► trial running
//	S = C, no T                         S = C, T, n                         S = T ≠ C, T, n
//	    ▲  ▲                               │                                  │      │
//	    │  │        MarkGood (cancels T)   │                                  │      │ Boot: n > 0
//	    │  └───────────────────────────────┘                                  │      └──► (again, n-1)
//	    │                                                                     │
//	    ├──── MarkGood: C = S = T, no T (commit) ─────────────────────────────┤
//	    │                                                                     │
//	    └──── Boot: n = 0 → S = C, no T, RolledBack = T (rollback) ───────────┘
//
// A committed box boots C at every power-on. TryNext is refused while a trial is running
// ([ErrTrialRunning]: commit or roll back first) and for the running slot. A power cut or
// crash during a trial is just another boot: it spends one of the n boots.
//
// # Implementations
//
//   - [FileLoader]: the environment is two copies of a small text file with a sequence
//     number and a CRC32 each, written like U-Boot's redundant environment; [FileLoader.Boot]
//     plays the bootloader. Tests run it on package faultfs, which cuts the power at any
//     operation; the perch binary's self-update runs it on the real disk, with the
//     perch-boot wrapper (cmd/perch-boot) as the bootloader.
//   - [UBoot]: U-Boot's environment through fw_printenv/fw_setenv (bootcount, bootlimit,
//     upgrade_available, altbootcmd) and the booted slot from the kernel command line.
//   - [RPiTryboot]: the Raspberry Pi firmware's tryboot (autoboot.txt, reboot "0 tryboot").
//   - Jetson (nvbootctrl) is documented in README.md, not implemented.
//
// All file operations go through the [FS] seam ([OSFS] on a box), so that the crash tests of
// this package and of package slots can cut the power between any two of them.
//
// # Usage
//
//	l := boot.NewFileLoader(boot.OSFS{}, "/var/lib/perch/slots")
//	if err := l.Init(ctx, boot.SlotA); err != nil { ... } // once, at provisioning
//	st, err := l.Status(ctx)                              // Booted, Fallback, Trying, ...
//	err = l.TryNext(ctx, st.Booted.Other(), 3)            // after installing the other slot
//	slot, err := l.Boot(ctx)                              // what perch-boot does at start
//	err = l.MarkGood(ctx)                                 // after the health window
package boot
