package uplink

import (
	"errors"
	"net"
	"sync"
)

// MQTT 3.1.1 control packet types the sniffer looks at.
const (
	typePublish = 3
	typePuback  = 4
)

// maxKeep is how many bytes of one packet the sniffer keeps: enough for a PUBLISH's topic,
// packet id and the start of its payload ({"id":N,...}). The rest of a longer packet is skipped.
const maxKeep = 64 << 10

// errMalformed is a byte stream that is not MQTT: the sniffer cannot follow it any more.
var errMalformed = errors.New("uplink: malformed MQTT packet on the wire")

// packet is what the sniffer saw of one MQTT control packet.
type packet struct {
	typ      byte   // control packet type, 1..15
	flags    byte   // the low 4 bits of the first byte
	packetID uint16 // PUBLISH with QoS > 0, PUBACK
	topic    string // PUBLISH
	payload  []byte // PUBLISH: the payload, cut at maxKeep bytes of packet
}

func (p *packet) qos() byte { return (p.flags >> 1) & 3 }

// parser follows one direction of an MQTT byte stream, in pieces of any size, and calls fn for
// each complete packet. The zero value is ready; it is not safe for concurrent use.
type parser struct {
	buf  []byte // the current packet's bytes so far, header included
	need int    // bytes of the current packet to keep (0: header not complete yet)
	skip int    // bytes of the current packet still to skip after what was kept
	err  error
}

// feed parses b. After an error it ignores its input and returns the error again.
func (p *parser) feed(b []byte, fn func(*packet)) error {
	for len(b) > 0 && p.err == nil {
		if p.need == 0 && p.skip > 0 { // the rest of a packet cut at maxKeep
			n := min(p.skip, len(b))
			p.skip -= n
			b = b[n:]
			continue
		}
		if p.need == 0 {
			// Complete the fixed header: 1 byte, then 1 to 4 bytes of remaining length.
			p.buf = append(p.buf, b[0])
			b = b[1:]
			rem, hdr, ok, err := fixedHeader(p.buf)
			if err != nil {
				p.err = err
				return err
			}
			if !ok {
				continue
			}
			total := hdr + rem
			p.need = min(total, maxKeep)
			p.skip = total - p.need
		}
		n := min(p.need-len(p.buf), len(b))
		p.buf = append(p.buf, b[:n]...)
		b = b[n:]
		if len(p.buf) == p.need {
			if err := p.emit(fn); err != nil {
				p.err = err
				return err
			}
			p.buf = p.buf[:0]
			p.need = 0
			// p.skip, if any, is consumed at the top of the loop.
		}
	}
	return p.err
}

// fixedHeader decodes the fixed header at the start of b: the remaining length, the header's
// size, and whether b holds all of it.
func fixedHeader(b []byte) (rem, size int, ok bool, err error) {
	if len(b) < 2 {
		return 0, 0, false, nil
	}
	mult := 1
	for i := 1; i < len(b); i++ {
		if i > 4 {
			return 0, 0, false, errMalformed
		}
		rem += int(b[i]&0x7f) * mult
		if b[i]&0x80 == 0 {
			return rem, i + 1, true, nil
		}
		mult *= 128
	}
	if len(b) > 4 {
		return 0, 0, false, errMalformed
	}
	return 0, 0, false, nil
}

// emit decodes the kept bytes of a packet and calls fn.
func (p *parser) emit(fn func(*packet)) error {
	rem, hdr, _, _ := fixedHeader(p.buf)
	pk := packet{typ: p.buf[0] >> 4, flags: p.buf[0] & 0x0f}
	body := p.buf[hdr:]
	switch pk.typ {
	case typePublish:
		if len(body) < 2 {
			return errMalformed
		}
		tl := int(body[0])<<8 | int(body[1])
		if len(body) < 2+tl {
			if rem > len(body) { // cut by maxKeep: a topic that long is not ours
				return nil
			}
			return errMalformed
		}
		pk.topic = string(body[2 : 2+tl])
		body = body[2+tl:]
		if pk.qos() == 3 {
			return errMalformed
		}
		if pk.qos() > 0 {
			if len(body) < 2 {
				if rem > len(p.buf)-hdr {
					return nil
				}
				return errMalformed
			}
			pk.packetID = uint16(body[0])<<8 | uint16(body[1])
			body = body[2:]
		}
		pk.payload = body
	case typePuback:
		if rem != 2 || len(body) != 2 {
			return errMalformed
		}
		pk.packetID = uint16(body[0])<<8 | uint16(body[1])
	case 0:
		return errMalformed
	}
	fn(&pk)
	return nil
}

// messageID reads our message id from the start of a payload, {"id":N,...}, as
// [store.OutboxRow.Message] writes it.
func messageID(payload []byte) (int64, bool) {
	const prefix = `{"id":`
	if len(payload) > 0 && payload[0] != '{' {
		return batchID(payload) // a batch of summaries: see batch.go
	}
	if len(payload) <= len(prefix) || string(payload[:len(prefix)]) != prefix {
		return 0, false
	}
	var id int64
	i := len(prefix)
	for ; i < len(payload) && payload[i] >= '0' && payload[i] <= '9'; i++ {
		if id > (1<<62)/10 {
			return 0, false
		}
		id = id*10 + int64(payload[i]-'0')
	}
	if i == len(prefix) || i == len(payload) || (payload[i] != ',' && payload[i] != '}') {
		return 0, false
	}
	return id, true
}

// sniffConn is the network connection paho uses, wrapped: it follows the MQTT packets both
// ways. An outgoing QoS 1 PUBLISH on one of our outbox topics maps its packet id to the message
// id in its payload; an incoming PUBACK of that packet id calls acked with the message id. This
// is how a row leaves the outbox only on a PUBACK our code saw, whatever paho's tokens say.
type sniffConn struct {
	net.Conn
	tracked func(topic string) bool // topics whose publishes carry outbox rows
	acked   func(id int64)          // called from paho's reader goroutine; must not block

	mu       sync.Mutex
	out, in  parser
	inflight map[uint16]int64 // packet id -> message id
	failed   func(error)      // the stream stopped making sense: drop the connection
	written  func(id int64)   // if set, called after a tracked PUBLISH was written (benchmarks)
}

func newSniffConn(c net.Conn, tracked func(string) bool, acked func(int64), failed func(error)) *sniffConn {
	return &sniffConn{Conn: c, tracked: tracked, acked: acked, failed: failed, inflight: map[uint16]int64{}}
}

// Write records the packets in b before it writes them, so that their PUBACK, however fast,
// finds the mapping.
func (c *sniffConn) Write(b []byte) (int, error) {
	var ids []int64
	c.mu.Lock()
	err := c.out.feed(b, func(p *packet) {
		if p.typ != typePublish || p.qos() != 1 || !c.tracked(p.topic) {
			return
		}
		if id, ok := messageID(p.payload); ok {
			c.inflight[p.packetID] = id
			if c.written != nil {
				ids = append(ids, id)
			}
		}
	})
	c.mu.Unlock()
	if err != nil {
		c.failed(err)
		c.Conn.Close()
		return 0, err
	}
	n, err := c.Conn.Write(b)
	if err == nil {
		for _, id := range ids {
			c.written(id)
		}
	}
	return n, err
}

// Read passes paho the bytes and acknowledges the outbox rows whose PUBACK they hold.
func (c *sniffConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if err != nil {
		// Do not wait for paho to notice: it reports a lost connection only once its workers
		// have stopped.
		defer c.failed(err)
	}
	if n > 0 {
		var ids []int64
		c.mu.Lock()
		ferr := c.in.feed(b[:n], func(p *packet) {
			if p.typ != typePuback {
				return
			}
			if id, ok := c.inflight[p.packetID]; ok {
				delete(c.inflight, p.packetID)
				ids = append(ids, id)
			}
		})
		c.mu.Unlock()
		for _, id := range ids {
			c.acked(id)
		}
		if ferr != nil {
			c.failed(ferr)
			c.Conn.Close()
			return 0, ferr
		}
	}
	return n, err
}
