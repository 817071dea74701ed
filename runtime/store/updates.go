package store

import (
	"context"
	"fmt"
	"time"
)

// UpdateStep is one row of the update journal (see update_journal in schema.sql).
type UpdateStep struct {
	TimeNS  int64
	Target  string
	Kind    string
	Version string
	Release uint64
	Digest  string
	Step    string
	Detail  string
}

// Installed is one row of the installed table: what the box runs in place of its config.
type Installed struct {
	Target, Kind, Name, Version string
	Release                     uint64
	Digest                      string
	Path, SHA256                string
	Manifest                    string
	InstalledNS                 int64
}

// Journal appends a step to the update journal and commits it (durably: synchronous=FULL)
// before it returns. A zero TimeNS is now. It is safe for concurrent use.
func (s *Store) Journal(ctx context.Context, st UpdateStep) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	if st.TimeNS == 0 {
		st.TimeNS = time.Now().UnixNano()
	}
	_, err := s.rw.ExecContext(ctx, `INSERT INTO update_journal (time_ns, target, kind, version, release, digest, step, detail)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, st.TimeNS, st.Target, st.Kind, st.Version, int64(st.Release), st.Digest, st.Step, st.Detail)
	if err != nil {
		return fmt.Errorf("store: journal %s %s: %w", st.Target, st.Step, err)
	}
	return nil
}

// LastSteps returns the last journal step of every target, newest first.
func (s *Store) LastSteps(ctx context.Context) ([]UpdateStep, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	rows, err := s.rw.QueryContext(ctx, `SELECT time_ns, target, kind, version, release, digest, step, detail
		FROM update_journal j WHERE id = (SELECT max(id) FROM update_journal WHERE target = j.target) ORDER BY id DESC`)
	if err != nil {
		return nil, fmt.Errorf("store: journal: %w", err)
	}
	defer rows.Close()
	var out []UpdateStep
	for rows.Next() {
		var st UpdateStep
		var rel int64
		if err := rows.Scan(&st.TimeNS, &st.Target, &st.Kind, &st.Version, &rel, &st.Digest, &st.Step, &st.Detail); err != nil {
			return nil, fmt.Errorf("store: journal: %w", err)
		}
		st.Release = uint64(rel)
		out = append(out, st)
	}
	return out, rows.Err()
}

// Install records what the box now runs for a target, with the committed journal step, in one
// transaction.
func (s *Store) Install(ctx context.Context, in Installed, detail string) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	if in.InstalledNS == 0 {
		in.InstalledNS = time.Now().UnixNano()
	}
	tx, err := s.rw.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: install %s: %w", in.Target, err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `INSERT INTO installed (target, kind, name, version, release, digest, path, sha256, manifest, installed_ns)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (target) DO UPDATE SET kind = excluded.kind, name = excluded.name, version = excluded.version,
			release = excluded.release, digest = excluded.digest, path = excluded.path, sha256 = excluded.sha256,
			manifest = excluded.manifest, installed_ns = excluded.installed_ns`,
		in.Target, in.Kind, in.Name, in.Version, int64(in.Release), in.Digest, in.Path, in.SHA256, in.Manifest, in.InstalledNS); err != nil {
		return fmt.Errorf("store: install %s: %w", in.Target, err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO update_journal (time_ns, target, kind, version, release, digest, step, detail)
		VALUES (?, ?, ?, ?, ?, ?, 'committed', ?)`, in.InstalledNS, in.Target, in.Kind, in.Version, int64(in.Release), in.Digest, detail); err != nil {
		return fmt.Errorf("store: install %s: %w", in.Target, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: install %s: %w", in.Target, err)
	}
	return nil
}

// InstalledAll returns every installed target.
func (s *Store) InstalledAll(ctx context.Context) ([]Installed, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	rows, err := s.rw.QueryContext(ctx, `SELECT target, kind, name, version, release, digest, path, sha256, manifest, installed_ns
		FROM installed ORDER BY target`)
	if err != nil {
		return nil, fmt.Errorf("store: installed: %w", err)
	}
	defer rows.Close()
	var out []Installed
	for rows.Next() {
		var in Installed
		var rel int64
		if err := rows.Scan(&in.Target, &in.Kind, &in.Name, &in.Version, &rel, &in.Digest, &in.Path, &in.SHA256, &in.Manifest, &in.InstalledNS); err != nil {
			return nil, fmt.Errorf("store: installed: %w", err)
		}
		in.Release = uint64(rel)
		out = append(out, in)
	}
	return out, rows.Err()
}
