package uplink

import (
	"bytes"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"
)

func encodePacket(t testing.TB, p packets.ControlPacket) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := p.Write(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func publishPacket(t testing.TB, topic string, qos byte, id uint16, payload []byte) []byte {
	p := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
	p.TopicName, p.Qos, p.MessageID, p.Payload = topic, qos, id, payload
	return encodePacket(t, p)
}

func pubackPacket(t testing.TB, id uint16) []byte {
	p := packets.NewControlPacket(packets.Puback).(*packets.PubackPacket)
	p.MessageID = id
	return encodePacket(t, p)
}

// TestParserChunks feeds a stream of packets in pieces of every size and checks what it sees.
func TestParserChunks(t *testing.T) {
	big := bytes.Repeat([]byte("x"), 3*maxKeep) // longer than the parser keeps
	var stream []byte
	stream = append(stream, publishPacket(t, "a/alerts", 1, 7, []byte(`{"id":42,"k":1}`))...)
	stream = append(stream, encodePacket(t, packets.NewControlPacket(packets.Pingreq))...)
	stream = append(stream, publishPacket(t, "a/status", 0, 0, []byte(`online`))...)
	stream = append(stream, publishPacket(t, "a/big", 1, 9, append([]byte(`{"id":5,`), big...))...)
	stream = append(stream, pubackPacket(t, 7)...)
	stream = append(stream, publishPacket(t, "a/after", 1, 10, []byte(`{"id":6}`))...)
	want := "3:a/alerts:7:42 12::0:-1 3:a/status:0:-1 3:a/big:9:5 4::7:-1 3:a/after:10:6 "
	for _, chunk := range []int{1, 2, 3, 7, 100, 1 << 20} {
		var p parser
		var got bytes.Buffer
		rest := stream
		for len(rest) > 0 {
			n := min(chunk, len(rest))
			err := p.feed(rest[:n], func(pk *packet) {
				id, ok := messageID(pk.payload)
				if !ok {
					id = -1
				}
				got.WriteString(formatPacket(pk, id))
			})
			if err != nil {
				t.Fatalf("chunk %d: %v", chunk, err)
			}
			rest = rest[n:]
		}
		if got.String() != want {
			t.Errorf("chunk %d:\n got %.300s\nwant %s", chunk, got.String(), want)
		}
	}
}

func formatPacket(pk *packet, id int64) string {
	return itoa(int64(pk.typ)) + ":" + pk.topic + ":" + itoa(int64(pk.packetID)) + ":" + itoa(id) + " "
}

func itoa(v int64) string {
	if v < 0 {
		return "-" + itoa(-v)
	}
	if v < 10 {
		return string(rune('0' + v))
	}
	return itoa(v/10) + string(rune('0'+v%10))
}

func TestParserMalformed(t *testing.T) {
	for name, b := range map[string][]byte{
		"length over 4 bytes": {0x30, 0xff, 0xff, 0xff, 0xff, 0x01},
		"puback of 3 bytes":   {0x40, 0x03, 0, 1, 2},
		"publish qos 3":       {0x36, 0x05, 0, 1, 'a', 0, 1},
		"type 0":              {0x00, 0x00},
	} {
		var p parser
		if err := p.feed(b, func(*packet) {}); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestMessageID(t *testing.T) {
	for in, want := range map[string]int64{
		`{"id":1,"a":2}`:              1,
		`{"id":123}`:                  123,
		`{"id":}`:                     -1,
		`{"id":12`:                    -1,
		`{"id":1x}`:                   -1,
		`{"state":"online"}`:          -1,
		`{"id":99999999999999999999}`: -1,
	} {
		got, ok := messageID([]byte(in))
		if !ok {
			got = -1
		}
		if got != want {
			t.Errorf("messageID(%s) = %d, want %d", in, got, want)
		}
	}
}

// TestSniffConn checks that a PUBACK acknowledges the message id of the PUBLISH with its packet
// id, only for tracked topics, and only once.
func TestSniffConn(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	acked := make(chan int64, 10)
	sc := newSniffConn(a, func(topic string) bool { return topic == "p/alerts" },
		func(id int64) { acked <- id }, func(err error) {
			if errors.Is(err, errMalformed) {
				t.Errorf("failed: %v", err)
			}
		})
	go func() { // the broker: read what the client writes, then send PUBACKs
		buf := make([]byte, 4096)
		b.SetReadDeadline(time.Now().Add(5 * time.Second))
		for n := 0; n < 3; {
			k, err := b.Read(buf)
			if err != nil {
				return
			}
			n += bytes.Count(buf[:k], []byte(`{"id":`))
		}
		for _, id := range []uint16{2, 1, 1, 3} {
			b.Write(pubackPacket(t, id))
		}
	}()
	for _, p := range [][]byte{
		publishPacket(t, "p/alerts", 1, 1, []byte(`{"id":10}`)),
		publishPacket(t, "p/other", 1, 2, []byte(`{"id":11}`)),
		publishPacket(t, "p/alerts", 1, 3, []byte(`{"id":12}`)),
	} {
		if _, err := sc.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	go func() {
		buf := make([]byte, 3) // PUBACKs cut in pieces
		for {
			if _, err := sc.Read(buf); err != nil {
				return
			}
		}
	}()
	var got []int64
	deadline := time.After(5 * time.Second)
	for len(got) < 2 {
		select {
		case id := <-acked:
			got = append(got, id)
		case <-deadline:
			t.Fatalf("acked %v", got)
		}
	}
	select {
	case id := <-acked:
		t.Errorf("acked %d again", id)
	case <-time.After(100 * time.Millisecond):
	}
	if got[0] != 10 || got[1] != 12 {
		t.Errorf("acked %v, want [10 12]", got)
	}
}

// FuzzParser: arbitrary bytes, split anywhere, never panic, and a stream that parses in one
// piece parses the same in two.
func FuzzParser(f *testing.F) {
	f.Add([]byte{0x32, 0x0b, 0, 3, 'a', '/', 'b', 0, 7, '{', '"', 'i', 'd'}, uint16(3))
	f.Add([]byte{0x40, 0x02, 0, 7, 0xc0, 0x00}, uint16(1))
	f.Add([]byte{0x30, 0xff, 0xff, 0xff, 0x7f}, uint16(2))
	f.Fuzz(func(t *testing.T, b []byte, split uint16) {
		var whole, parts parser
		var n1, n2 int
		err1 := whole.feed(b, func(p *packet) { n1++; messageID(p.payload) })
		at := int(split) % (len(b) + 1)
		err2 := parts.feed(b[:at], func(*packet) { n2++ })
		if err2 == nil {
			err2 = parts.feed(b[at:], func(*packet) { n2++ })
		}
		if (err1 == nil) != (err2 == nil) || n1 != n2 {
			t.Errorf("whole: %d packets, %v; split at %d: %d packets, %v", n1, err1, at, n2, err2)
		}
	})
}
