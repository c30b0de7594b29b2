package tbevents

import (
	"encoding/binary"
	"hash/crc32"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

func TestCRC32CCheckValue(t *testing.T) {
	// The standard CRC-32C check value (RFC 3720 B.4): "123456789" → E3069283.
	if got := crc32.Checksum([]byte("123456789"), castagnoli); got != 0xE3069283 {
		t.Fatalf("crc32c = %08x", got)
	}
	// TFRecord masking: rotate right by 15, add 0xa282ead8.
	c := uint32(0xE3069283)
	if got, want := maskedCRC([]byte("123456789")), (c>>15|c<<17)+0xa282ead8; got != want {
		t.Fatalf("masked = %08x, want %08x", got, want)
	}
}

// TestEventFile writes scalars and parses the file back by the TFRecord and
// tensorflow.Event field numbers TensorBoard reads.
func TestEventFile(t *testing.T) {
	dir := t.TempDir()
	w, err := Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Unix(1700000000, 500_000_000)
	if err := w.Scalar("train/loss", 7, 2.5, at); err != nil {
		t.Fatal(err)
	}
	w.Close()
	files, _ := filepath.Glob(filepath.Join(dir, "events.out.tfevents.*"))
	if len(files) != 1 {
		t.Fatalf("files: %v", files)
	}
	b, _ := os.ReadFile(files[0])
	var records [][]byte
	for len(b) > 0 {
		n := binary.LittleEndian.Uint64(b)
		if binary.LittleEndian.Uint32(b[8:]) != maskedCRC(b[:8]) {
			t.Fatal("bad length crc")
		}
		data := b[12 : 12+n]
		if binary.LittleEndian.Uint32(b[12+n:]) != maskedCRC(data) {
			t.Fatal("bad data crc")
		}
		records = append(records, data)
		b = b[16+n:]
	}
	if len(records) != 2 || !strings.Contains(string(records[0]), "brain.Event:2") {
		t.Fatalf("records: %q", records)
	}
	fields := map[protowire.Number][]byte{}
	rec := records[1]
	var step uint64
	var wall float64
	for len(rec) > 0 {
		num, typ, n := protowire.ConsumeTag(rec)
		rec = rec[n:]
		switch typ {
		case protowire.Fixed64Type:
			v, m := protowire.ConsumeFixed64(rec)
			wall, rec = math.Float64frombits(v), rec[m:]
		case protowire.VarintType:
			v, m := protowire.ConsumeVarint(rec)
			step, rec = v, rec[m:]
		case protowire.BytesType:
			v, m := protowire.ConsumeBytes(rec)
			fields[num], rec = v, rec[m:]
		}
	}
	if step != 7 || wall != 1700000000.5 {
		t.Fatalf("step %d wall %v", step, wall)
	}
	// summary(5) → value(1) → tag(1) "train/loss", simple_value(2) 2.5
	_, _, n := protowire.ConsumeTag(fields[5])
	val, _ := protowire.ConsumeBytes(fields[5][n:])
	_, _, n = protowire.ConsumeTag(val)
	tag, m := protowire.ConsumeString(val[n:])
	rest := val[n+m:]
	_, _, n = protowire.ConsumeTag(rest)
	f, _ := protowire.ConsumeFixed32(rest[n:])
	if tag != "train/loss" || math.Float32frombits(f) != 2.5 {
		t.Fatalf("tag %q value %v", tag, math.Float32frombits(f))
	}
}
