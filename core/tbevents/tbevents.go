// Package tbevents writes TensorBoard event files (TFRecord-framed
// tensorflow.Event protos holding scalar summaries), so `tensorboard
// --logdir RUN` shows a mypt run's curves without any TensorFlow code here.
package tbevents

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

// Writer appends scalar events to one event file.
type Writer struct {
	f *os.File
}

// Create starts a new event file in dir, named as TensorBoard expects
// (events.out.tfevents.<unix seconds>.<host>).
func Create(dir string) (*Writer, error) {
	host, _ := os.Hostname()
	if host == "" {
		host = "localhost"
	}
	// TensorBoard reads every file with "tfevents" in its name; the pid and
	// a counter keep two runs started in the same second apart.
	var f *os.File
	for n := 0; ; n++ {
		name := fmt.Sprintf("events.out.tfevents.%d.%s.%d.%d", time.Now().Unix(), host, os.Getpid(), n)
		var err error
		f, err = os.OpenFile(filepath.Join(dir, name), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		if err == nil {
			break
		}
		if !errors.Is(err, os.ErrExist) || n >= 100 {
			return nil, fmt.Errorf("create event file: %w", err)
		}
	}
	w := &Writer{f: f}
	// Every event file starts with a file_version event.
	ev := protowire.AppendTag(nil, 1, protowire.Fixed64Type)
	ev = protowire.AppendFixed64(ev, math.Float64bits(wallTime(time.Now())))
	ev = protowire.AppendTag(ev, 3, protowire.BytesType)
	ev = protowire.AppendString(ev, "brain.Event:2")
	if err := w.writeRecord(ev); err != nil {
		f.Close()
		return nil, err
	}
	return w, nil
}

// Scalar records value under tag at step.
func (w *Writer) Scalar(tag string, step int64, value float64, at time.Time) error {
	var val []byte // Summary.Value{tag: 1, simple_value: 2}
	val = protowire.AppendTag(val, 1, protowire.BytesType)
	val = protowire.AppendString(val, tag)
	val = protowire.AppendTag(val, 2, protowire.Fixed32Type)
	val = protowire.AppendFixed32(val, math.Float32bits(float32(value)))
	var sum []byte // Summary{value: 1}
	sum = protowire.AppendTag(sum, 1, protowire.BytesType)
	sum = protowire.AppendBytes(sum, val)
	var ev []byte // Event{wall_time: 1, step: 2, summary: 5}
	ev = protowire.AppendTag(ev, 1, protowire.Fixed64Type)
	ev = protowire.AppendFixed64(ev, math.Float64bits(wallTime(at)))
	ev = protowire.AppendTag(ev, 2, protowire.VarintType)
	ev = protowire.AppendVarint(ev, uint64(step))
	ev = protowire.AppendTag(ev, 5, protowire.BytesType)
	ev = protowire.AppendBytes(ev, sum)
	return w.writeRecord(ev)
}

// Close flushes and closes the file.
func (w *Writer) Close() error { return w.f.Close() }

func wallTime(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// maskedCRC is TFRecord's masked CRC-32C.
func maskedCRC(b []byte) uint32 {
	c := crc32.Checksum(b, castagnoli)
	return (c>>15 | c<<17) + 0xa282ead8
}

// writeRecord frames data as a TFRecord: length, masked CRC of the length,
// data, masked CRC of the data; one write so records are never torn apart
// by another writer.
func (w *Writer) writeRecord(data []byte) error {
	rec := make([]byte, 12, 16+len(data))
	binary.LittleEndian.PutUint64(rec, uint64(len(data)))
	binary.LittleEndian.PutUint32(rec[8:], maskedCRC(rec[:8]))
	rec = append(rec, data...)
	rec = binary.LittleEndian.AppendUint32(rec, maskedCRC(data))
	if _, err := w.f.Write(rec); err != nil {
		return fmt.Errorf("write event: %w", err)
	}
	return nil
}
