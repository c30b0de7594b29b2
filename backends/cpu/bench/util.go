package main

import (
	"encoding/binary"
	"io"
	"math"
)

var ioEOF = io.EOF

func putF32(b []byte, v float32) { binary.LittleEndian.PutUint32(b, math.Float32bits(v)) }
