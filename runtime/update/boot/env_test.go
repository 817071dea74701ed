package boot

import (
	"strings"
	"testing"
)

func TestEnvRoundTrip(t *testing.T) {
	e := env{seq: 42, dflt: SlotB, try: SlotA, tries: 3, booted: SlotB, rolledBack: NoSlot}
	got, err := decodeEnv("x", e.encode())
	if err != nil || got != e {
		t.Fatalf("decode(encode(%+v)) = %+v, %v", e, got, err)
	}
}

func TestEnvDecodeErrors(t *testing.T) {
	good := string(env{seq: 1, dflt: SlotA, booted: SlotA}.encode())
	// reseal recomputes the crc32 line of a modified body, so that the parser sees it.
	reseal := func(body string) []byte {
		return append([]byte(body), []byte(crcLine(body))...)
	}
	body, _, _ := cutLastLine([]byte(good))
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "no crc32 line"},
		{"torn", []byte(good[:len(good)-5]), "no crc32 line"},
		{"flipped", []byte(strings.Replace(good, "seq=1", "seq=7", 1)), "crc32 mismatch"},
		{"unknown key", reseal(string(body) + "colour=red\n"), `env:8: unknown key "colour"`},
		{"bad slot", reseal(strings.Replace(string(body), "default=A", "default=C", 1)), `env:3: default: boot: bad slot "C"`},
		{"tries without slot", reseal(strings.Replace(string(body), "tries=0", "tries=2", 1)), "tries=2 without a slot"},
		{"missing key", reseal(strings.Replace(string(body), "booted=A\n", "", 1)), `missing key "booted"`},
		{"duplicate", reseal(string(body) + "seq=3\n"), `duplicate key "seq"`},
		{"magic", reseal("# something else\n" + string(body[len(envMagic):])), "bad first line"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeEnv("env", tc.data)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("decodeEnv: %v, want %q", err, tc.want)
			}
		})
	}
}

func crcLine(body string) string {
	return string(env{}.encodeSum([]byte(body)))
}

// FuzzDecodeEnv: the environment is read at every boot from a disk that may hold anything:
// decoding must not panic, and what it accepts must re-encode to the same environment.
func FuzzDecodeEnv(f *testing.F) {
	f.Add(env{seq: 3, dflt: SlotA, try: SlotB, tries: 2, booted: SlotA}.encode())
	f.Add([]byte("crc32=00000000\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := decodeEnv("fuzz", data)
		if err != nil {
			return
		}
		again, err := decodeEnv("fuzz", e.encode())
		if err != nil || again != e {
			t.Fatalf("accepted %+v but its encoding decodes to %+v, %v", e, again, err)
		}
	})
}

// TestEnvReadmeExample keeps the example in README.md a valid copy.
func TestEnvReadmeExample(t *testing.T) {
	e := env{seq: 12, dflt: SlotA, try: SlotB, tries: 2, booted: SlotA}
	if !strings.Contains(string(e.encode()), "crc32=aaef1a03\n") {
		t.Fatalf("README example out of date:\n%s", e.encode())
	}
}
