// Package trust signs and verifies the TUF metadata of a Perch registry (go-tuf v2).
//
// # Overview
//
// Artifacts (modules, models, deployments, firmware) live in an OCI registry. Their trust comes
// from TUF: root, targets, snapshot and timestamp metadata, served as static files under /tuf/.
// Each TUF target is one OCI manifest: the target's length and sha256 are the manifest's, so the
// target pins the OCI digest, and its custom field ([Custom]) carries our metadata: kind,
// version, hardware, ABI, a release counter, the OCI repository and the manifest digest.
//
// The signing side is [Repo]: [Init] creates the keys and the first metadata (perch registry
// keygen), [OpenRepo] opens the tuf folder with the keys an operator hands it, [Repo.AddTarget]
// stages targets, and [Repo.Publish], [Repo.RefreshSnapshot] and [Repo.RefreshTimestamp]
// re-sign, each needing only the keys of the roles it signs. Root and targets keys stay offline;
// snapshot and timestamp keys may live on the registry box. [Repo.RotateRoot] writes the next
// root, signed by the old and the new root keys.
//
// The verifying side is [Client]: it starts from the root embedded in the box at provisioning,
// refreshes through the go-tuf updater ([Client.Refresh]), and answers [Client.Target] and
// [Client.Check]. [VerifyReader] and [VerifyFile] check an artifact's bytes against its target.
//
// # Usage
//
//	c, err := trust.NewClient(trust.ClientConfig{
//		Root:     embeddedRoot, // the 1.root.json written by perch registry keygen
//		CacheDir: "/var/lib/perch/tuf",
//		BaseURL:  "https://registry.example:5000/tuf/",
//	})
//	if err := c.Refresh(ctx); err != nil { ... }
//	if err := c.Check("modules/thermo", installed, "arm64"); err != nil { ... } // not newer, wrong board
//	custom, info, err := c.Target("modules/thermo")
//	// fetch the manifest custom.Digest from custom.Repository, then:
//	err = trust.VerifyReader(body, info)
//
// # Time
//
// Expiry is never switched off. A box without a real-time clock boots in 1970, where every
// metadata file looks fresh: the [Clock] a client is given must say when it has no trusted time,
// and the default [SystemClock] refuses readings before its NotBefore floor.
//
// # Power cuts
//
// go-tuf persists metadata without fsync. The client runs each refresh in a staging folder,
// fsyncs what it keeps and moves it into the cache only after the whole refresh succeeded; it
// drops cached files that do not parse, and never prefers a cached root that is corrupt or not
// newer than the embedded one. Artifacts cached on disk must be re-verified with [VerifyFile]
// before use.
package trust
