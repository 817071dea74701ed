package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// GetState returns the value a module stored under key, and whether there was one. It reads
// the last committed value. It is safe for concurrent use.
func (s *Store) GetState(ctx context.Context, module, key string) ([]byte, bool, error) {
	if err := s.checkOpen(); err != nil {
		return nil, false, err
	}
	var value []byte
	err := s.ro.QueryRowContext(ctx, "SELECT value FROM module_state WHERE module = ? AND key = ?",
		module, key).Scan(&value)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("store: get state %s/%s: %w", module, key, err)
	}
	if value == nil {
		value = []byte{}
	}
	return value, true, nil
}

// SetState stores value (copied; nil stores an empty value) under the module's key, replacing
// any previous one, and returns once it is committed. It does not go through the group commit:
// state writes are rare, and each is its own small transaction. It is safe for concurrent use.
func (s *Store) SetState(ctx context.Context, module, key string, value []byte) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	if value == nil {
		value = []byte{}
	}
	_, err := s.rw.ExecContext(ctx, `INSERT INTO module_state (module, key, value, updated_ns)
		VALUES (?, ?, ?, ?)
		ON CONFLICT (module, key) DO UPDATE SET value = excluded.value, updated_ns = excluded.updated_ns`,
		module, key, value, time.Now().UnixNano())
	if err != nil {
		return fmt.Errorf("store: set state %s/%s: %w", module, key, err)
	}
	return nil
}

// DeleteState deletes the module's key; deleting a missing key is not an error. It returns once
// the deletion is committed, and is safe for concurrent use.
func (s *Store) DeleteState(ctx context.Context, module, key string) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	_, err := s.rw.ExecContext(ctx, "DELETE FROM module_state WHERE module = ? AND key = ?", module, key)
	if err != nil {
		return fmt.Errorf("store: delete state %s/%s: %w", module, key, err)
	}
	return nil
}

// SetMeta sets a fact in the meta table, such as "runtime_version", "site" or "device", and
// returns once it is committed. It is safe for concurrent use.
func (s *Store) SetMeta(ctx context.Context, key, value string) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	_, err := s.rw.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES (?, ?)
		ON CONFLICT (key) DO UPDATE SET value = excluded.value`, key, value)
	if err != nil {
		return fmt.Errorf("store: set meta %s: %w", key, err)
	}
	return nil
}

// Meta returns a fact from the meta table and whether it is set. It is safe for concurrent use.
func (s *Store) Meta(ctx context.Context, key string) (string, bool, error) {
	if err := s.checkOpen(); err != nil {
		return "", false, err
	}
	var value string
	err := s.ro.QueryRowContext(ctx, "SELECT value FROM meta WHERE key = ?", key).Scan(&value)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("store: get meta %s: %w", key, err)
	}
	return value, true, nil
}
