package boot

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"strconv"
	"strings"
)

// env is the FileLoader's boot environment.
type env struct {
	seq        uint64 // write sequence number; the newest valid copy wins
	dflt       Slot   // committed slot
	try        Slot   // slot under trial, or NoSlot
	tries      int    // boots left for try
	booted     Slot   // slot the last Boot chose
	rolledBack Slot   // slot whose trial ran out at the last fallback
}

const envMagic = "# perch boot environment v1 (one of two redundant copies; see package boot)\n"

// envMaxBytes bounds what readCopy reads: a copy is about 150 bytes.
const envMaxBytes = 4096

// encode renders e as text followed by a crc32 line over all the bytes before it.
func (e env) encode() []byte {
	var b bytes.Buffer
	b.WriteString(envMagic)
	fmt.Fprintf(&b, "seq=%d\ndefault=%s\ntry=%s\ntries=%d\nbooted=%s\nrolledback=%s\n",
		e.seq, e.dflt, e.try, e.tries, e.booted, e.rolledBack)
	return append(b.Bytes(), e.encodeSum(b.Bytes())...)
}

// encodeSum returns the crc32 line that seals body.
func (env) encodeSum(body []byte) []byte {
	return fmt.Appendf(nil, "crc32=%08x\n", crc32.ChecksumIEEE(body))
}

// decodeEnv parses one copy; name is used in errors.
func decodeEnv(name string, data []byte) (env, error) {
	var e env
	body, sumLine, ok := cutLastLine(data)
	if !ok || !strings.HasPrefix(sumLine, "crc32=") {
		return e, fmt.Errorf("%s: no crc32 line (torn or truncated write?)", name)
	}
	want, err := strconv.ParseUint(strings.TrimPrefix(sumLine, "crc32="), 16, 32)
	if err != nil {
		return e, fmt.Errorf("%s: bad crc32 line %q", name, sumLine)
	}
	if got := crc32.ChecksumIEEE(body); uint32(want) != got {
		return e, fmt.Errorf("%s: crc32 mismatch: stored %08x, computed %08x", name, want, got)
	}
	if !bytes.HasPrefix(body, []byte(envMagic)) {
		return e, fmt.Errorf("%s: not a perch boot environment (bad first line)", name)
	}
	seen := map[string]bool{}
	for i, line := range strings.Split(strings.TrimSuffix(string(body[len(envMagic):]), "\n"), "\n") {
		key, val, ok := strings.Cut(line, "=")
		lineNo := i + 2
		if !ok {
			return e, fmt.Errorf("%s:%d: want key=value, got %q", name, lineNo, line)
		}
		if seen[key] {
			return e, fmt.Errorf("%s:%d: duplicate key %q", name, lineNo, key)
		}
		seen[key] = true
		slot := func() (Slot, error) {
			if val == "" {
				return NoSlot, nil
			}
			s, err := ParseSlot(val)
			if err != nil {
				return NoSlot, fmt.Errorf("%s:%d: %s: %w", name, lineNo, key, err)
			}
			return s, nil
		}
		switch key {
		case "seq":
			e.seq, err = strconv.ParseUint(val, 10, 64)
		case "tries":
			e.tries, err = strconv.Atoi(val)
			if err == nil && (e.tries < 0 || e.tries > MaxTries) {
				err = fmt.Errorf("out of range 0..%d", MaxTries)
			}
		case "default":
			e.dflt, err = slot()
		case "try":
			e.try, err = slot()
		case "booted":
			e.booted, err = slot()
		case "rolledback":
			e.rolledBack, err = slot()
		default:
			return e, fmt.Errorf("%s:%d: unknown key %q", name, lineNo, key)
		}
		if err != nil {
			return e, fmt.Errorf("%s:%d: %s: %w", name, lineNo, key, err)
		}
	}
	for _, k := range []string{"seq", "default", "try", "tries", "booted", "rolledback"} {
		if !seen[k] {
			return e, fmt.Errorf("%s: missing key %q", name, k)
		}
	}
	if !e.dflt.Valid() {
		return e, fmt.Errorf("%s: default slot is empty", name)
	}
	if e.try == NoSlot && e.tries != 0 {
		return e, fmt.Errorf("%s: tries=%d without a slot to try", name, e.tries)
	}
	return e, nil
}

// cutLastLine splits data into everything before its last line and the last line (without
// its newline). data must end with a newline.
func cutLastLine(data []byte) (body []byte, last string, ok bool) {
	if len(data) == 0 || data[len(data)-1] != '\n' {
		return nil, "", false
	}
	i := bytes.LastIndexByte(data[:len(data)-1], '\n')
	if i < 0 {
		return nil, "", false
	}
	return data[:i+1], string(data[i+1 : len(data)-1]), true
}

// envCopy is what reading one copy found.
type envCopy struct {
	env     env
	exists  bool
	invalid error // why the copy is unusable; nil if valid
}

// readCopy reads and validates one copy.
func readCopy(fsys FS, name string) envCopy {
	r, err := fsys.Open(name)
	if errors.Is(err, fs.ErrNotExist) {
		return envCopy{invalid: fmt.Errorf("%s: missing", name)}
	}
	if err != nil {
		return envCopy{exists: true, invalid: err}
	}
	defer r.Close()
	data, err := io.ReadAll(io.LimitReader(r, envMaxBytes+1))
	if err != nil {
		return envCopy{exists: true, invalid: fmt.Errorf("%s: %w", name, err)}
	}
	if len(data) > envMaxBytes {
		return envCopy{exists: true, invalid: fmt.Errorf("%s: larger than %d bytes", name, envMaxBytes)}
	}
	e, err := decodeEnv(name, data)
	return envCopy{env: e, exists: true, invalid: err}
}
