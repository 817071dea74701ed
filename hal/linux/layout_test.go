//go:build linux

package linux

import (
	"runtime"
	"testing"
	"unsafe"
)

// The kernel structs, sizes and offsets computed by hand from the uAPI headers
// (include/uapi/linux/i2c.h, i2c-dev.h, spi/spidev.h, gpio.h) so that a layout mistake fails
// here and not on a Raspberry Pi.
func TestStructLayout(t *testing.T) {
	p := unsafe.Sizeof(uintptr(0)) // 8 on 64-bit, 4 on 32-bit
	ptrAligned := func(off uintptr) uintptr { return (off + p - 1) &^ (p - 1) }
	tests := []struct {
		name      string
		got, want uintptr
	}{
		// struct i2c_msg { __u16 addr, flags, len; __u8 *buf; }
		{"sizeof(struct i2c_msg)", unsafe.Sizeof(i2cMsg{}), ptrAligned(6) + p}, // 16 on 64-bit, 12 on 32-bit
		{"offsetof(i2c_msg, flags)", unsafe.Offsetof(i2cMsg{}.flags), 2},
		{"offsetof(i2c_msg, len)", unsafe.Offsetof(i2cMsg{}.len), 4},
		{"offsetof(i2c_msg, buf)", unsafe.Offsetof(i2cMsg{}.buf), 8},
		// struct i2c_rdwr_ioctl_data { struct i2c_msg *msgs; __u32 nmsgs; }
		{"sizeof(struct i2c_rdwr_ioctl_data)", unsafe.Sizeof(i2cRDWRData{}), 2 * p},
		{"offsetof(i2c_rdwr_ioctl_data, nmsgs)", unsafe.Offsetof(i2cRDWRData{}.nmsgs), p},
		// struct i2c_smbus_ioctl_data { __u8 read_write, command; __u32 size; union i2c_smbus_data *data; }
		{"sizeof(struct i2c_smbus_ioctl_data)", unsafe.Sizeof(i2cSMBusData{}), ptrAligned(8) + p},
		{"offsetof(i2c_smbus_ioctl_data, command)", unsafe.Offsetof(i2cSMBusData{}.command), 1},
		{"offsetof(i2c_smbus_ioctl_data, size)", unsafe.Offsetof(i2cSMBusData{}.size), 4},
		{"offsetof(i2c_smbus_ioctl_data, data)", unsafe.Offsetof(i2cSMBusData{}.data), 8},
		{"sizeof(union i2c_smbus_data)", i2cSMBusDataSize, 34},

		// struct spi_ioc_transfer: two __u64, two __u32, __u16, six __u8 = 32 everywhere.
		{"sizeof(struct spi_ioc_transfer)", unsafe.Sizeof(spiIOCTransfer{}), 32},
		{"spiIOCTransferSize", spiIOCTransferSize, 32},
		{"offsetof(spi_ioc_transfer, rx_buf)", unsafe.Offsetof(spiIOCTransfer{}.rxBuf), 8},
		{"offsetof(spi_ioc_transfer, len)", unsafe.Offsetof(spiIOCTransfer{}.len), 16},
		{"offsetof(spi_ioc_transfer, speed_hz)", unsafe.Offsetof(spiIOCTransfer{}.speedHz), 20},
		{"offsetof(spi_ioc_transfer, delay_usecs)", unsafe.Offsetof(spiIOCTransfer{}.delayUsecs), 24},
		{"offsetof(spi_ioc_transfer, bits_per_word)", unsafe.Offsetof(spiIOCTransfer{}.bitsPerWord), 26},
		{"offsetof(spi_ioc_transfer, cs_change)", unsafe.Offsetof(spiIOCTransfer{}.csChange), 27},
		{"offsetof(spi_ioc_transfer, tx_nbits)", unsafe.Offsetof(spiIOCTransfer{}.txNbits), 28},
		{"offsetof(spi_ioc_transfer, rx_nbits)", unsafe.Offsetof(spiIOCTransfer{}.rxNbits), 29},
		{"offsetof(spi_ioc_transfer, word_delay_usecs)", unsafe.Offsetof(spiIOCTransfer{}.wordDelayUsecs), 30},

		// struct gpiochip_info { char name[32], label[32]; __u32 lines; }
		{"sizeof(struct gpiochip_info)", unsafe.Sizeof(gpioChipInfo{}), 68},
		{"offsetof(gpiochip_info, lines)", unsafe.Offsetof(gpioChipInfo{}.lines), 64},
		// struct gpio_v2_line_attribute { __u32 id, padding; union { __u64 flags, values; __u32 debounce_period_us; }; }
		{"sizeof(struct gpio_v2_line_attribute)", unsafe.Sizeof(gpioV2LineAttribute{}), 16},
		{"offsetof(gpio_v2_line_attribute, <union>)", unsafe.Offsetof(gpioV2LineAttribute{}.val), 8},
		// struct gpio_v2_line_config_attribute { struct gpio_v2_line_attribute attr; __u64 mask; }
		{"sizeof(struct gpio_v2_line_config_attribute)", unsafe.Sizeof(gpioV2LineConfigAttribute{}), 24},
		{"offsetof(gpio_v2_line_config_attribute, mask)", unsafe.Offsetof(gpioV2LineConfigAttribute{}.mask), 16},
		// struct gpio_v2_line_config { __u64 flags; __u32 num_attrs, padding[5]; attrs[10]; }
		{"sizeof(struct gpio_v2_line_config)", unsafe.Sizeof(gpioV2LineConfig{}), 8 + 4 + 20 + 10*24},
		{"gpioV2LineCfgSize", gpioV2LineCfgSize, 272},
		{"offsetof(gpio_v2_line_config, num_attrs)", unsafe.Offsetof(gpioV2LineConfig{}.numAttrs), 8},
		{"offsetof(gpio_v2_line_config, attrs)", unsafe.Offsetof(gpioV2LineConfig{}.attrs), 32},
		// struct gpio_v2_line_request { __u32 offsets[64]; char consumer[32]; config;
		// __u32 num_lines, event_buffer_size, padding[5]; __s32 fd; }
		{"sizeof(struct gpio_v2_line_request)", unsafe.Sizeof(gpioV2LineRequest{}), 592},
		{"gpioV2LineReqSize", gpioV2LineReqSize, 592},
		{"offsetof(gpio_v2_line_request, consumer)", unsafe.Offsetof(gpioV2LineRequest{}.consumer), 256},
		{"offsetof(gpio_v2_line_request, config)", unsafe.Offsetof(gpioV2LineRequest{}.config), 288},
		{"offsetof(gpio_v2_line_request, num_lines)", unsafe.Offsetof(gpioV2LineRequest{}.numLines), 560},
		{"offsetof(gpio_v2_line_request, event_buffer_size)", unsafe.Offsetof(gpioV2LineRequest{}.eventBufferSize), 564},
		{"offsetof(gpio_v2_line_request, fd)", unsafe.Offsetof(gpioV2LineRequest{}.fd), 588},
		// struct gpio_v2_line_values { __u64 bits, mask; }
		{"sizeof(struct gpio_v2_line_values)", unsafe.Sizeof(gpioV2LineValues{}), 16},
		{"offsetof(gpio_v2_line_values, mask)", unsafe.Offsetof(gpioV2LineValues{}.mask), 8},
		// struct gpio_v2_line_event { __u64 timestamp_ns; __u32 id, offset, seqno, line_seqno, padding[6]; }
		{"sizeof(struct gpio_v2_line_event)", unsafe.Sizeof(gpioV2LineEvent{}), 48},
		{"gpioV2LineEventSize", gpioV2LineEventSize, 48},
		{"offsetof(gpio_v2_line_event, id)", unsafe.Offsetof(gpioV2LineEvent{}.id), 8},
		{"offsetof(gpio_v2_line_event, offset)", unsafe.Offsetof(gpioV2LineEvent{}.offset), 12},
		{"offsetof(gpio_v2_line_event, seqno)", unsafe.Offsetof(gpioV2LineEvent{}.seqno), 16},
		{"offsetof(gpio_v2_line_event, line_seqno)", unsafe.Offsetof(gpioV2LineEvent{}.lineSeqno), 20},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s = %d, want %d (GOARCH=%s)", tt.name, tt.got, tt.want, runtime.GOARCH)
		}
	}
	if p == 8 {
		// The figures the brief quotes for 64-bit, spelled out.
		if s := unsafe.Sizeof(i2cMsg{}); s != 16 {
			t.Errorf("sizeof(struct i2c_msg) = %d on 64-bit, want 16", s)
		}
	}
}

// The request numbers, computed by hand from _IOC(dir, type, nr, size) =
// dir<<30 | size<<16 | type<<8 | nr with _IOC_WRITE = 1 and _IOC_READ = 2 (asm-generic).
func TestIoctlNumbers(t *testing.T) {
	switch runtime.GOARCH {
	case "mips", "mipsle", "mips64", "mips64le", "ppc64", "ppc64le":
		t.Skipf("%s encodes ioctl numbers differently; the values below are asm-generic", runtime.GOARCH)
	}
	tests := []struct {
		name      string
		got, want uint
	}{
		{"I2C_SLAVE", i2cSlave, 0x0703},
		{"I2C_FUNCS", i2cFuncs, 0x0705},
		{"I2C_RDWR", i2cRDWR, 0x0707},
		{"I2C_SMBUS", i2cSMBus, 0x0720},
		{"I2C_M_RD", i2cMRd, 0x0001},
		{"I2C_FUNC_I2C", i2cFuncI2C, 0x00000001},
		{"I2C_FUNC_SMBUS_READ_I2C_BLOCK", i2cFuncSMBusReadI2CBlk, 0x04000000},
		{"I2C_SMBUS_I2C_BLOCK_DATA", i2cSMBusI2CBlock, 8},

		{"SPI_IOC_MESSAGE(1)", spiIOCMessage1, 0x40206B00},
		{"SPI_IOC_WR_MODE", spiIOCWrMode, 0x40016B01},
		{"SPI_IOC_WR_BITS_PER_WORD", spiIOCWrBitsPerWord, 0x40016B03},
		{"SPI_IOC_WR_MAX_SPEED_HZ", spiIOCWrMaxSpeedHz, 0x40046B04},
		{"SPI_IOC_WR_MODE32", spiIOCWrMode32, 0x40046B05},

		{"GPIO_GET_CHIPINFO_IOCTL", gpioGetChipInfo, 0x8044B401},
		{"GPIO_V2_GET_LINE_IOCTL", gpioV2GetLine, 0xC250B407},
		{"GPIO_V2_LINE_SET_CONFIG_IOCTL", gpioV2LineSetConfig, 0xC110B40D},
		{"GPIO_V2_LINE_GET_VALUES_IOCTL", gpioV2LineGetValues, 0xC010B40E},
		{"GPIO_V2_LINE_SET_VALUES_IOCTL", gpioV2LineSetValues, 0xC010B40F},
		{"GPIO_V2_LINE_FLAG_INPUT", gpioV2FlagInput, 0x04},
		{"GPIO_V2_LINE_FLAG_OUTPUT", gpioV2FlagOutput, 0x08},
		{"GPIO_V2_LINE_FLAG_EDGE_RISING", gpioV2FlagEdgeRise, 0x10},
		{"GPIO_V2_LINE_FLAG_EDGE_FALLING", gpioV2FlagEdgeFall, 0x20},
		{"GPIO_V2_LINE_FLAG_BIAS_PULL_UP", gpioV2FlagPullUp, 0x100},
		{"GPIO_V2_LINE_FLAG_BIAS_DISABLED", gpioV2FlagBiasOff, 0x400},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s = %#x, want %#x", tt.name, tt.got, tt.want)
		}
	}
}

// The debounce period is a __u32 member of a union whose other members are __u64: it must land
// in the union's first four bytes whatever the byte order.
func TestAttributeU32(t *testing.T) {
	var a gpioV2LineAttribute
	a.setU32(0x01020304)
	b := (*[16]byte)(unsafe.Pointer(&a))
	if got := *(*uint32)(unsafe.Pointer(&b[8])); got != 0x01020304 {
		t.Errorf("debounce_period_us reads %#x, want 0x01020304", got)
	}
	if got := *(*uint32)(unsafe.Pointer(&b[12])); got != 0 {
		t.Errorf("the union's last four bytes are %#x, want 0", got)
	}
}
