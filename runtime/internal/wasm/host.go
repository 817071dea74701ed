package wasm

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/sys"

	"github.com/perch-edge/perch/hal"
	"github.com/perch-edge/perch/sdk/abi"
)

// Host-side caps on buffers the host touches on a guest's behalf (the memory limit does not
// count them).
const (
	maxStateKey   = 255
	maxStateValue = 64 << 10
	maxTransfer   = 4096 // bytes per bus transfer
)

// Grants is the compiled form of what a module instance may reach. Anything not listed is
// denied with EPERM.
type Grants struct {
	I2C   []I2CAddr
	SPI   []SPIDev
	GPIO  []GPIOLine
	UART  []string // port names
	State bool
	// Models are the models the module may score rows with (perch:infer/v1); a model's id is
	// its index here.
	Models []Model
}

// I2CAddr is one granted I2C device.
type I2CAddr struct {
	Bus  int
	Addr uint16
}

// SPIDev is one granted SPI chip select.
type SPIDev struct{ Bus, CS int }

// GPIOLine is one granted GPIO line; Out allows driving it.
type GPIOLine struct {
	Line int
	Out  bool
}

func (g *Grants) i2c(bus, addr uint32) bool {
	for _, a := range g.I2C {
		if uint32(a.Bus) == bus && uint32(a.Addr) == addr {
			return true
		}
	}
	return false
}

func (g *Grants) spi(bus, cs uint32) bool {
	for _, d := range g.SPI {
		if uint32(d.Bus) == bus && uint32(d.CS) == cs {
			return true
		}
	}
	return false
}

func (g *Grants) gpio(line uint32, write bool) bool {
	for _, l := range g.GPIO {
		if uint32(l.Line) == line && (l.Out || !write) {
			return true
		}
	}
	return false
}

func (g *Grants) uart(port []byte) (string, bool) {
	for _, p := range g.UART {
		if string(port) == p {
			return p, true
		}
	}
	return "", false
}

var (
	i32 = api.ValueTypeI32
	i64 = api.ValueTypeI64
)

type hostFunc struct {
	module, name   string
	method         func(*Instance, context.Context, api.Module, []uint64)
	params, result []api.ValueType
}

// bind makes a host function that calls method on the instance the call's context carries.
func bind(method func(*Instance, context.Context, api.Module, []uint64)) api.GoModuleFunc {
	return func(ctx context.Context, mod api.Module, stack []uint64) {
		i, _ := ctx.Value(instanceKey{}).(*Instance)
		if i == nil {
			// Only calls made through an Instance reach here; anything else is a bug.
			_ = mod.CloseWithExitCode(ctx, abi.ExitBadPointer)
			panic(sys.NewExitError(abi.ExitBadPointer))
		}
		method(i, ctx, mod, stack)
	}
}

// hostFuncs returns the perch:*/v1 host functions the engine serves, in the order they are
// instantiated. sdk/ABI.md documents each one (abidoc_test.go checks it).
func hostFuncs() []hostFunc {
	errno := []api.ValueType{i32}
	return []hostFunc{
		{abi.ModuleLog, abi.FuncLogWrite, (*Instance).logWrite, []api.ValueType{i32, i32, i32}, errno},
		{abi.ModuleIO, abi.FuncEmit, (*Instance).emit, []api.ValueType{i32, i32}, errno},
		{abi.ModuleIO, abi.FuncSave, (*Instance).save, []api.ValueType{i32, i32}, errno},
		{abi.ModuleClock, abi.FuncNow, (*Instance).nowNS, nil, []api.ValueType{i64}},
		{abi.ModuleConfig, abi.FuncConfigGet, (*Instance).configGet, []api.ValueType{i32, i32, i32}, errno},
		{abi.ModuleState, abi.FuncStateGet, (*Instance).stateGet, []api.ValueType{i32, i32, i32, i32, i32}, errno},
		{abi.ModuleState, abi.FuncStateSet, (*Instance).stateSet, []api.ValueType{i32, i32, i32, i32}, errno},
		{abi.ModuleState, abi.FuncStateDelete, (*Instance).stateDelete, []api.ValueType{i32, i32}, errno},
		{abi.ModuleHAL, abi.FuncI2CRead, (*Instance).i2cRead, []api.ValueType{i32, i32, i32, i32, i32}, errno},
		{abi.ModuleHAL, abi.FuncI2CWrite, (*Instance).i2cWrite, []api.ValueType{i32, i32, i32, i32}, errno},
		{abi.ModuleHAL, abi.FuncSPITransfer, (*Instance).spiTransfer, []api.ValueType{i32, i32, i32, i32, i32}, errno},
		{abi.ModuleHAL, abi.FuncGPIORead, (*Instance).gpioRead, []api.ValueType{i32, i32}, errno},
		{abi.ModuleHAL, abi.FuncGPIOWrite, (*Instance).gpioWrite, []api.ValueType{i32, i32}, errno},
		{abi.ModuleHAL, abi.FuncUARTRead, (*Instance).uartRead, []api.ValueType{i32, i32, i32, i32, i32}, errno},
		{abi.ModuleHAL, abi.FuncUARTWrite, (*Instance).uartWrite, []api.ValueType{i32, i32, i32, i32}, errno},
		{abi.ModuleInfer, abi.FuncInferOpen, (*Instance).inferOpen, []api.ValueType{i32, i32, i32}, errno},
		{abi.ModuleInfer, abi.FuncInfer, (*Instance).infer, []api.ValueType{i32, i32, i32, i32, i32}, errno},
	}
}

// instantiateHost instantiates the perch:*/v1 host modules in the engine's runtime. Each host
// function finds the calling [Instance] in the call's context (see Instance.callContext).
func instantiateHost(ctx context.Context, rt wazero.Runtime) error {
	builders := map[string]wazero.HostModuleBuilder{}
	var order []string
	for _, f := range hostFuncs() {
		b, ok := builders[f.module]
		if !ok {
			b = rt.NewHostModuleBuilder(f.module)
			builders[f.module] = b
			order = append(order, f.module)
		}
		b.NewFunctionBuilder().WithGoModuleFunction(bind(f.method), f.params, f.result).Export(f.name)
	}
	for _, m := range order {
		if _, err := builders[m].Instantiate(ctx); err != nil {
			return err
		}
	}
	return nil
}

// kill closes the guest from inside a host function with one of abi's Exit codes; wazero turns
// the ExitError panic into the call's error (the same way WASI's proc_exit works).
func (i *Instance) kill(ctx context.Context, mod api.Module, code uint32, format string, args ...any) {
	i.reason = fmt.Sprintf(format, args...)
	_ = mod.CloseWithExitCode(ctx, code)
	panic(sys.NewExitError(code))
}

// read returns the guest memory [ptr, ptr+n) or kills the guest with ExitBadPointer.
func (i *Instance) read(ctx context.Context, mod api.Module, fn string, ptr, n uint32) []byte {
	b, ok := mod.Memory().Read(ptr, n)
	if !ok {
		i.kill(ctx, mod, abi.ExitBadPointer, "%s: [%#x, +%d) is outside memory of %d bytes", fn, ptr, n, mod.Memory().Size())
	}
	return b
}

func (i *Instance) putU32(ctx context.Context, mod api.Module, fn string, ptr, v uint32) {
	if !mod.Memory().WriteUint32Le(ptr, v) {
		i.kill(ctx, mod, abi.ExitBadPointer, "%s: length pointer %#x is outside memory of %d bytes", fn, ptr, mod.Memory().Size())
	}
}

// errnoOf maps a HAL error to an errno.
func errnoOf(err error) abi.Errno {
	switch {
	case err == nil:
		return abi.OK
	case errors.Is(err, hal.ErrNACK):
		return abi.ENACK
	case errors.Is(err, hal.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return abi.ETIMEDOUT
	case errors.Is(err, hal.ErrNoDevice):
		return abi.ENODEV
	case errors.Is(err, hal.ErrInvalid):
		return abi.EINVAL
	default:
		return abi.EIO
	}
}

func ret(stack []uint64, e abi.Errno) { stack[0] = uint64(e) }

// logWrite is perch:log/v1 write(level i32, ptr i32, len i32) -> errno.
//
// Logs the UTF-8 message at [ptr, ptr+len) at the slog level (-4 debug, 0 info, 4 warn, 8
// error), tagged with the module. Reads guest memory only. Errnos: OK. A bad pointer closes the
// guest (bad_pointer); more than the module's log_bytes in one call closes it (log_quota).
// At most [logLinesPerSecond] lines a second are logged; the rest are dropped (still OK) and
// counted in one warn line when the next line is logged (see [logLimit]).
func (i *Instance) logWrite(ctx context.Context, mod api.Module, stack []uint64) {
	level, ptr, n := int32(stack[0]), uint32(stack[1]), uint32(stack[2])
	i.logged += int(n)
	if i.logged > i.spec.LogBytes {
		i.kill(ctx, mod, abi.ExitLogQuota, "log: %d bytes in one call, quota %d", i.logged, i.spec.LogBytes)
	}
	msg := i.read(ctx, mod, "log.write", ptr, n)
	ok, dropped := i.logs.allow(time.Now())
	if dropped > 0 {
		i.spec.Logger.Warn("guest log lines dropped: over the rate limit", "module", i.spec.Name,
			"dropped", dropped, "lines_per_second", logLinesPerSecond)
	}
	if ok {
		i.spec.Logger.Log(ctx, slog.Level(level), string(msg), "module", i.spec.Name)
	}
	ret(stack, abi.OK)
}

// emit is perch:io/v1 emit(ptr i32, len i32) -> errno.
//
// Takes the batch of encoded records at [ptr, ptr+len) as the call's output. The host fills in
// an empty source with the module's instance name and a zero time with the current time.
// Reads guest memory only. Errnos: OK. A bad pointer closes the guest (bad_pointer); a batch
// that does not decode, or a record of a kind the manifest does not declare in emits, closes it
// (bad_record); more records or bytes than the module's quota in one call close it
// (emit_quota).
func (i *Instance) emit(ctx context.Context, mod api.Module, stack []uint64) {
	ptr, n := uint32(stack[0]), uint32(stack[1])
	data := i.read(ctx, mod, "emit", ptr, n)
	if len(i.out)+len(data) > i.spec.EmitBytes {
		i.kill(ctx, mod, abi.ExitEmitQuota, "emit: %d bytes in one call, quota %d", len(i.out)+len(data), i.spec.EmitBytes)
	}
	it := abi.Iter{Buf: data}
	for it.Next() {
		i.emitted++
		if i.emitted > i.spec.EmitRecords {
			i.kill(ctx, mod, abi.ExitEmitQuota, "emit: more than %d records in one call", i.spec.EmitRecords)
		}
		if !i.emits[it.Rec.Kind] {
			i.kill(ctx, mod, abi.ExitBadRecord, "emit: a record of kind %s, which the manifest does not declare in emits %v", it.Rec.Kind, i.spec.Emits)
		}
		raw := data[it.Off : len(data)-len(it.Buf)]
		i.out = appendStamped(i.out, raw, &it.Rec, i.spec.Name, i.spec.Now)
	}
	if err := it.Err(); err != nil {
		i.kill(ctx, mod, abi.ExitBadRecord, "emit: %v", err)
	}
	ret(stack, abi.OK)
}

// save is perch:io/v1 save(ptr i32, len i32) -> errno.
//
// Appends the bytes at [ptr, ptr+len) to the snapshot the module hands to the next binary on a
// hot swap (see [Instance.Snapshot]). Only valid during perch_snapshot. Reads guest memory only.
// Errnos: OK; EPERM outside perch_snapshot (nothing is kept); EINVAL when the snapshot would
// grow past [abi.MaxSnapshot] bytes (the whole snapshot is then discarded: the next binary
// starts fresh). A bad pointer closes the guest (bad_pointer).
func (i *Instance) save(ctx context.Context, mod api.Module, stack []uint64) {
	ptr, n := uint32(stack[0]), uint32(stack[1])
	if !i.snapshotting {
		ret(stack, abi.EPERM)
		return
	}
	data := i.read(ctx, mod, "save", ptr, n)
	if i.snapTooBig || uint64(len(i.snap))+uint64(n) > abi.MaxSnapshot {
		i.snapTooBig = true
		ret(stack, abi.EINVAL)
		return
	}
	i.snap = append(i.snap, data...)
	ret(stack, abi.OK)
}

// appendStamped appends one raw record to dst, filling in an empty source and a zero time.
func appendStamped(dst, raw []byte, r *abi.Record, source string, now func() int64) []byte {
	start := len(dst)
	if len(r.Source) > 0 {
		dst = append(dst, raw...)
	} else {
		if len(source) > abi.MaxString {
			source = source[:abi.MaxString]
		}
		dst = append(dst, raw[:abi.HeaderSize]...)
		dst = append(dst, byte(len(source)))
		dst = append(dst, source...)
		dst = append(dst, raw[abi.HeaderSize+1:]...)
		binary.LittleEndian.PutUint32(dst[start:], uint32(len(dst)-start))
	}
	if r.TimeNS == 0 {
		binary.LittleEndian.PutUint64(dst[start+8:], uint64(now()))
	}
	return dst
}

// nowNS is perch:clock/v1 now_ns() -> i64: the current time in nanoseconds since the Unix epoch.
func (i *Instance) nowNS(_ context.Context, _ api.Module, stack []uint64) {
	stack[0] = uint64(i.spec.Now())
}

// configGet is perch:config/v1 get(buf_ptr i32, buf_cap i32, len_ptr i32) -> errno.
//
// Writes the module's config (JSON) to [buf_ptr, buf_ptr+buf_cap) and its length as a u32 at
// len_ptr. Errnos: OK; ENOSPC when buf_cap is too small (the length is still written). A bad
// pointer closes the guest.
func (i *Instance) configGet(ctx context.Context, mod api.Module, stack []uint64) {
	ptr, capacity, lenPtr := uint32(stack[0]), uint32(stack[1]), uint32(stack[2])
	cfg := i.spec.Config
	i.putU32(ctx, mod, "config.get", lenPtr, uint32(len(cfg)))
	if int(capacity) < len(cfg) {
		ret(stack, abi.ENOSPC)
		return
	}
	copy(i.read(ctx, mod, "config.get", ptr, uint32(len(cfg))), cfg)
	ret(stack, abi.OK)
}

func (i *Instance) stateAllowed(stack []uint64) bool {
	switch {
	case !i.spec.Grants.State:
		ret(stack, abi.EPERM)
	case i.spec.State == nil:
		ret(stack, abi.ENOSYS)
	default:
		return true
	}
	return false
}

func (i *Instance) stateKey(ctx context.Context, mod api.Module, fn string, ptr, n uint32, stack []uint64) (string, bool) {
	if n == 0 || n > maxStateKey {
		ret(stack, abi.EINVAL)
		return "", false
	}
	return string(i.read(ctx, mod, fn, ptr, n)), true
}

// stateGet is perch:state/v1 get(key_ptr, key_len, buf_ptr, buf_cap, len_ptr i32) -> errno.
//
// Reads the module's own state value for the key (1 to 255 bytes) into [buf_ptr, +buf_cap) and
// writes its length as a u32 at len_ptr. Errnos: OK; ENOENT (no such key); ENOSPC (buf_cap too
// small, the length is written); EINVAL (key length); EPERM (state not granted); EIO (the store
// failed). A bad pointer closes the guest.
func (i *Instance) stateGet(ctx context.Context, mod api.Module, stack []uint64) {
	if !i.stateAllowed(stack) {
		return
	}
	key, ok := i.stateKey(ctx, mod, "state.get", uint32(stack[0]), uint32(stack[1]), stack)
	if !ok {
		return
	}
	ptr, capacity, lenPtr := uint32(stack[2]), uint32(stack[3]), uint32(stack[4])
	v, found, err := i.spec.State.GetState(ctx, i.spec.Name, key)
	switch {
	case err != nil:
		ret(stack, abi.EIO)
		return
	case !found:
		ret(stack, abi.ENOENT)
		return
	}
	i.putU32(ctx, mod, "state.get", lenPtr, uint32(len(v)))
	if int(capacity) < len(v) {
		ret(stack, abi.ENOSPC)
		return
	}
	copy(i.read(ctx, mod, "state.get", ptr, uint32(len(v))), v)
	ret(stack, abi.OK)
}

// stateSet is perch:state/v1 set(key_ptr, key_len, val_ptr, val_len i32) -> errno.
//
// Stores the value (at most 64 KiB) under the key (1 to 255 bytes) in the module's own state,
// durably. Errnos: OK; EINVAL (key or value length); EPERM (state not granted); EIO (the store
// failed). A bad pointer closes the guest.
func (i *Instance) stateSet(ctx context.Context, mod api.Module, stack []uint64) {
	if !i.stateAllowed(stack) {
		return
	}
	key, ok := i.stateKey(ctx, mod, "state.set", uint32(stack[0]), uint32(stack[1]), stack)
	if !ok {
		return
	}
	n := uint32(stack[3])
	if n > maxStateValue {
		ret(stack, abi.EINVAL)
		return
	}
	v := append([]byte(nil), i.read(ctx, mod, "state.set", uint32(stack[2]), n)...)
	if err := i.spec.State.SetState(ctx, i.spec.Name, key, v); err != nil {
		ret(stack, abi.EIO)
		return
	}
	ret(stack, abi.OK)
}

// stateDelete is perch:state/v1 delete(key_ptr, key_len i32) -> errno.
//
// Deletes the key from the module's state; deleting a missing key is OK. Errnos: OK; EINVAL;
// EPERM; EIO. A bad pointer closes the guest.
func (i *Instance) stateDelete(ctx context.Context, mod api.Module, stack []uint64) {
	if !i.stateAllowed(stack) {
		return
	}
	key, ok := i.stateKey(ctx, mod, "state.delete", uint32(stack[0]), uint32(stack[1]), stack)
	if !ok {
		return
	}
	if err := i.spec.State.DeleteState(ctx, i.spec.Name, key); err != nil {
		ret(stack, abi.EIO)
		return
	}
	ret(stack, abi.OK)
}

// i2cRead is perch:hal/v1 i2c_read(bus, addr, reg, buf_ptr, buf_len i32) -> errno.
//
// Writes the register number reg (0 to 255) to the device at the 7-bit address addr on the bus,
// then reads buf_len bytes (at most 4096) into [buf_ptr, +buf_len), as one transaction.
// Errnos: OK; EPERM (bus and address not granted); EINVAL (reg or length out of range); ENACK;
// ETIMEDOUT; ENODEV; EIO. A bad pointer closes the guest.
func (i *Instance) i2cRead(ctx context.Context, mod api.Module, stack []uint64) {
	bus, addr, reg, ptr, n := uint32(stack[0]), uint32(stack[1]), uint32(stack[2]), uint32(stack[3]), uint32(stack[4])
	if !i.spec.Grants.i2c(bus, addr) {
		ret(stack, abi.EPERM)
		return
	}
	if reg > 255 || n > maxTransfer {
		ret(stack, abi.EINVAL)
		return
	}
	buf := i.read(ctx, mod, "i2c_read", ptr, n)
	b, e := i.i2cBus(bus)
	if e != abi.OK {
		ret(stack, e)
		return
	}
	i.reg[0] = byte(reg)
	ret(stack, errnoOf(b.Tx(ctx, uint16(addr), i.reg[:], buf)))
}

// i2cWrite is perch:hal/v1 i2c_write(bus, addr, ptr, len i32) -> errno.
//
// Writes [ptr, ptr+len) (at most 4096 bytes) to the device at addr on the bus. Errnos as for
// i2c_read.
func (i *Instance) i2cWrite(ctx context.Context, mod api.Module, stack []uint64) {
	bus, addr, ptr, n := uint32(stack[0]), uint32(stack[1]), uint32(stack[2]), uint32(stack[3])
	if !i.spec.Grants.i2c(bus, addr) {
		ret(stack, abi.EPERM)
		return
	}
	if n > maxTransfer {
		ret(stack, abi.EINVAL)
		return
	}
	data := i.read(ctx, mod, "i2c_write", ptr, n)
	b, e := i.i2cBus(bus)
	if e != abi.OK {
		ret(stack, e)
		return
	}
	ret(stack, errnoOf(b.Tx(ctx, uint16(addr), data, nil)))
}

// i2cBus returns the bus, from a one-entry cache (a driver reads one bus over and over; a
// Provider returns the same handle for the same bus).
func (i *Instance) i2cBus(bus uint32) (hal.I2C, abi.Errno) {
	if i.lastI2C != nil && i.lastI2CBus == bus {
		return i.lastI2C, abi.OK
	}
	if i.spec.HAL == nil {
		return nil, abi.ENODEV
	}
	b, err := i.spec.HAL.I2CBus(int(bus))
	if err != nil {
		return nil, errnoOf(err)
	}
	i.lastI2C, i.lastI2CBus = b, bus
	return b, abi.OK
}

// spiTransfer is perch:hal/v1 spi_transfer(bus, cs, tx_ptr, rx_ptr, len i32) -> errno.
//
// Clocks out len bytes (at most 4096) from [tx_ptr, +len) while clocking in len bytes to
// [rx_ptr, +len) on the bus with the chip select. Errnos: OK; EPERM (bus and chip select not
// granted); EINVAL; ETIMEDOUT; ENODEV; EIO. A bad pointer closes the guest.
func (i *Instance) spiTransfer(ctx context.Context, mod api.Module, stack []uint64) {
	bus, cs, txp, rxp, n := uint32(stack[0]), uint32(stack[1]), uint32(stack[2]), uint32(stack[3]), uint32(stack[4])
	if !i.spec.Grants.spi(bus, cs) {
		ret(stack, abi.EPERM)
		return
	}
	if n > maxTransfer {
		ret(stack, abi.EINVAL)
		return
	}
	tx := i.read(ctx, mod, "spi_transfer", txp, n)
	rx := i.read(ctx, mod, "spi_transfer", rxp, n)
	if i.spec.HAL == nil {
		ret(stack, abi.ENODEV)
		return
	}
	p, err := i.spec.HAL.SPIPort(int(bus), int(cs))
	if err != nil {
		ret(stack, errnoOf(err))
		return
	}
	ret(stack, errnoOf(p.Tx(ctx, tx, rx)))
}

// gpioRead is perch:hal/v1 gpio_read(line, out_ptr i32) -> errno.
//
// Reads the line's level and writes it as one byte (0 or 1) at out_ptr. Errnos: OK; EPERM (line
// not granted); ENODEV; EIO. A bad pointer closes the guest.
func (i *Instance) gpioRead(ctx context.Context, mod api.Module, stack []uint64) {
	line, out := uint32(stack[0]), uint32(stack[1])
	if !i.spec.Grants.gpio(line, false) {
		ret(stack, abi.EPERM)
		return
	}
	b := i.read(ctx, mod, "gpio_read", out, 1)
	l, e := i.gpioLine(line)
	if e != abi.OK {
		ret(stack, e)
		return
	}
	v, err := l.Read(ctx)
	if err != nil {
		ret(stack, errnoOf(err))
		return
	}
	b[0] = 0
	if v {
		b[0] = 1
	}
	ret(stack, abi.OK)
}

// gpioWrite is perch:hal/v1 gpio_write(line, level i32) -> errno.
//
// Drives the line low (level 0) or high (any other level). Errnos: OK; EPERM (line not granted
// as an output); ENODEV; EIO.
func (i *Instance) gpioWrite(ctx context.Context, _ api.Module, stack []uint64) {
	line, level := uint32(stack[0]), uint32(stack[1])
	if !i.spec.Grants.gpio(line, true) {
		ret(stack, abi.EPERM)
		return
	}
	l, e := i.gpioLine(line)
	if e != abi.OK {
		ret(stack, e)
		return
	}
	ret(stack, errnoOf(l.Write(ctx, level != 0)))
}

func (i *Instance) gpioLine(line uint32) (hal.GPIO, abi.Errno) {
	if i.spec.HAL == nil {
		return nil, abi.ENODEV
	}
	l, err := i.spec.HAL.GPIOLine(int(line))
	if err != nil {
		return nil, errnoOf(err)
	}
	return l, abi.OK
}

// uartPort checks the port name against the grants and then opens the port.
func (i *Instance) uartPort(ctx context.Context, name string) (hal.UART, abi.Errno) {
	if i.spec.HAL == nil {
		return nil, abi.ENODEV
	}
	p, err := i.spec.HAL.UARTPort(name)
	if err != nil {
		return nil, errnoOf(err)
	}
	return p, abi.OK
}

// uartGrant reads the port name and checks it against the grants.
func (i *Instance) uartGrant(ctx context.Context, mod api.Module, fn string, ptr, n uint32) (string, abi.Errno) {
	if n > abi.MaxString {
		return "", abi.EINVAL
	}
	name, ok := i.spec.Grants.uart(i.read(ctx, mod, fn, ptr, n))
	if !ok {
		return "", abi.EPERM
	}
	return name, abi.OK
}

// uartRead is perch:hal/v1 uart_read(port_ptr, port_len, buf_ptr, buf_cap, len_ptr i32) -> errno.
//
// Reads the bytes that have arrived on the named port (at most buf_cap, at most 4096) into
// [buf_ptr, +buf_cap) and writes their count as a u32 at len_ptr; 0 bytes is OK. Errnos: OK;
// EPERM (port not granted); EINVAL; ENODEV; EIO. A bad pointer closes the guest.
func (i *Instance) uartRead(ctx context.Context, mod api.Module, stack []uint64) {
	name, e := i.uartGrant(ctx, mod, "uart_read", uint32(stack[0]), uint32(stack[1]))
	if e != abi.OK {
		ret(stack, e)
		return
	}
	ptr, capacity, lenPtr := uint32(stack[2]), uint32(stack[3]), uint32(stack[4])
	if capacity > maxTransfer {
		capacity = maxTransfer
	}
	buf := i.read(ctx, mod, "uart_read", ptr, capacity)
	i.putU32(ctx, mod, "uart_read", lenPtr, 0)
	p, e := i.uartPort(ctx, name)
	if e != abi.OK {
		ret(stack, e)
		return
	}
	n, err := p.Read(ctx, buf)
	i.putU32(ctx, mod, "uart_read", lenPtr, uint32(n))
	ret(stack, errnoOf(err))
}

// uartWrite is perch:hal/v1 uart_write(port_ptr, port_len, ptr, len i32) -> errno.
//
// Sends [ptr, ptr+len) (at most 4096 bytes) on the named port. Errnos: OK; EPERM; EINVAL;
// ENODEV; EIO. A bad pointer closes the guest.
func (i *Instance) uartWrite(ctx context.Context, mod api.Module, stack []uint64) {
	name, e := i.uartGrant(ctx, mod, "uart_write", uint32(stack[0]), uint32(stack[1]))
	if e != abi.OK {
		ret(stack, e)
		return
	}
	n := uint32(stack[3])
	if n > maxTransfer {
		ret(stack, abi.EINVAL)
		return
	}
	data := i.read(ctx, mod, "uart_write", uint32(stack[2]), n)
	p, e := i.uartPort(ctx, name)
	if e != abi.OK {
		ret(stack, e)
		return
	}
	_, err := p.Write(ctx, data)
	ret(stack, errnoOf(err))
}
