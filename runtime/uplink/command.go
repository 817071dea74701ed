package uplink

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/perch-edge/perch/runtime/store"
	"github.com/perch-edge/perch/sdk/abi"
)

// The actuate command (cmd/actuate) drives an actuator from upstream:
//
//	{"request_id": "r-17", "module": "fan", "state": "on", "message": "operator: cool down"}
//
// state is "on" or "off"; request_id and message are optional. The uplink hands the module one
// alert record, as if a rule had raised it: source "uplink", series "command", tags state
// (raised for on, cleared for off), message and request_id. Deny by default: only the modules
// listed in uplink.commands.actuate may be driven. The reply on cmd/actuate/reply says ok, or
// why not; every actuate command, done or refused, is recorded as an event of kind
// uplink.command (fields command, module, state, request_id, ok and error), which goes upstream
// like any event.

// EventCommand is the kind of the event recorded for each actuate command.
const EventCommand = "uplink.command"

// Alert records of the actuate command.
const (
	CommandSource = "uplink"
	CommandSeries = "command"
)

// injectTimeout bounds how long an actuate command waits for room in the module's input queue.
const injectTimeout = 5 * time.Second

// maxCommandMessage bounds the message tag of an actuate command, in bytes.
const maxCommandMessage = 256

// eventer is the part of the store that records events; the uplink audits commands with it.
type eventer interface {
	Event(ctx context.Context, e store.Event) error
}

// actuateRequest is the payload of cmd/actuate.
type actuateRequest struct {
	RequestID any    `json:"request_id"`
	Module    string `json:"module"`
	State     string `json:"state"`
	Message   string `json:"message"`
}

// actuate runs the actuate command of payload; it returns nil when the module took the record,
// or an error whose text is the reply's reason.
func (u *Uplink) actuate(payload []byte) (req actuateRequest, err error) {
	defer func() { u.auditActuate(req, err) }()
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return req, fmt.Errorf("bad payload: want a JSON object such as "+
			`{"request_id": "r1", "module": "fan", "state": "on"}: %v`, err)
	}
	if dec.More() {
		return req, errors.New("bad payload: more than one JSON value")
	}
	switch {
	case req.Module == "":
		return req, errors.New("bad payload: module is required")
	case len(req.Module) > 63:
		return req, errors.New("bad payload: module: not a module name (at most 63 bytes)")
	case req.State != "on" && req.State != "off":
		return req, fmt.Errorf(`bad payload: state: want "on" or "off", got %q`, req.State)
	case len(req.Message) > maxCommandMessage:
		return req, fmt.Errorf("bad payload: message: at most %d bytes", maxCommandMessage)
	}
	switch req.RequestID.(type) {
	case nil, string, float64:
	default:
		return req, errors.New("bad payload: request_id: want a string or a number")
	}
	if !u.cfg.Commands.CanActuate(req.Module) {
		return req, fmt.Errorf("module %q may not be actuated from upstream: it is not listed in uplink.commands.actuate", req.Module)
	}
	if u.opts.Inject == nil {
		return req, errors.New("this runtime takes no actuate commands (no pipeline to inject into)")
	}
	state := "raised"
	if req.State == "off" {
		state = "cleared"
	}
	msg := req.Message
	if msg == "" {
		msg = "command from upstream: " + req.State
	}
	tags := []abi.Tag{{Key: "state", Value: state}, {Key: "message", Value: msg}}
	if id := requestID(req.RequestID); id != "" {
		tags = append(tags, abi.Tag{Key: "request_id", Value: id})
	}
	rec := abi.Append(nil, abi.KindAlert, time.Now().UnixNano(), CommandSource, CommandSeries, nil, tags)
	ctx, cancel := context.WithTimeout(context.Background(), injectTimeout)
	defer cancel()
	if err := u.opts.Inject(ctx, req.Module, rec); err != nil {
		return req, err
	}
	return req, nil
}

// requestID is a command's request id as a tag value: a string as is, a number in JSON.
func requestID(v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case string:
		return v
	default:
		js, _ := json.Marshal(v)
		return string(js)
	}
}

// auditActuate records an actuate command, done or refused, as an event, and logs it.
func (u *Uplink) auditActuate(req actuateRequest, err error) {
	fields := map[string]any{"command": "actuate", "module": req.Module, "state": req.State,
		"request_id": requestID(req.RequestID), "ok": err == nil}
	msg := fmt.Sprintf("actuate %s %s from upstream", req.Module, req.State)
	if err != nil {
		fields["error"] = err.Error()
		msg += ": refused: " + err.Error()
		u.log.Warn("uplink: command refused", "command", "actuate", "module", req.Module, "state", req.State, "err", err)
	} else {
		u.log.Info("uplink: command", "command", "actuate", "module", req.Module, "state", req.State)
	}
	ev, ok := u.st.(eventer)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), injectTimeout)
	defer cancel()
	if err := ev.Event(ctx, store.Event{TimeNS: time.Now().UnixNano(), Kind: EventCommand, Module: req.Module,
		Message: msg, Fields: fields}); err != nil {
		u.log.Error("uplink: recording a command", "err", err)
	}
}
