package myptckpt

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/big"
)

// This file is a deliberately small, strict unpickler for the subset of
// pickle that torch.save emits for a state_dict (protocol 2). It never
// resolves arbitrary globals: only the callables and classes listed in
// allowedGlobals can appear, and each is interpreted by this package rather
// than executed. Any other opcode or global is an error naming it.

// pickle opcodes accepted by the unpickler.
const (
	opProto       = 0x80
	opStop        = '.'
	opMark        = '('
	opEmptyDict   = '}'
	opEmptyList   = ']'
	opEmptyTuple  = ')'
	opTuple       = 't'
	opTuple1      = 0x85
	opTuple2      = 0x86
	opTuple3      = 0x87
	opBinUnicode  = 'X'
	opBinInt      = 'J'
	opBinInt1     = 'K'
	opBinInt2     = 'M'
	opLong1       = 0x8a
	opBinFloat    = 'G'
	opNewTrue     = 0x88
	opNewFalse    = 0x89
	opNone        = 'N'
	opGlobal      = 'c'
	opBinPersID   = 'Q'
	opReduce      = 'R'
	opBuild       = 'b'
	opSetItem     = 's'
	opSetItems    = 'u'
	opAppend      = 'a'
	opAppends     = 'e'
	opBinPut      = 'q'
	opLongBinPut  = 'r'
	opBinGet      = 'h'
	opLongBinGet  = 'j'
	opFrame       = 0x95
	opMemoize     = 0x94
	opShortBinUni = 0x8c
	opStackGlobal = 0x93
)

// pyGlobal is a whitelisted global reference (module + name).
type pyGlobal struct{ module, name string }

func (g pyGlobal) String() string { return g.module + "." + g.name }

// allowedGlobals are the only globals a model.pt may reference.
var allowedGlobals = map[pyGlobal]bool{
	{"collections", "OrderedDict"}:         true,
	{"torch._utils", "_rebuild_tensor_v2"}: true,
	{"torch._utils", "_rebuild_parameter"}: true,
	{"torch", "FloatStorage"}:              true,
	{"torch", "BFloat16Storage"}:           true,
	{"torch", "HalfStorage"}:               true,
	{"torch", "DoubleStorage"}:             true,
}

// pyMark is the stack marker pushed by MARK.
type pyMark struct{}

// pyTuple is a Python tuple.
type pyTuple []any

// pyList is a Python list.
type pyList struct{ items []any }

// pyDict is a Python dict (or OrderedDict) that keeps insertion order. Keys
// are restricted to strings and ints.
type pyDict struct {
	keys   []any
	values map[any]any
	attrs  *pyDict // state set by BUILD (OrderedDict._metadata); ignored
}

func newDict() *pyDict { return &pyDict{values: map[any]any{}} }

func (d *pyDict) set(k, v any) error {
	switch k.(type) {
	case string, int64:
	default:
		return fmt.Errorf("unsupported dict key type %T", k)
	}
	if _, ok := d.values[k]; !ok {
		d.keys = append(d.keys, k)
	}
	d.values[k] = v
	return nil
}

func (d *pyDict) get(k string) (any, bool) {
	v, ok := d.values[k]
	return v, ok
}

// storageRef is a persistent-id reference to a storage record in the zip.
type storageRef struct {
	class string // FloatStorage, BFloat16Storage, HalfStorage, DoubleStorage
	key   string // record name under data/
	numel int64
}

// tensorRef is a tensor rebuilt by _rebuild_tensor_v2: a strided view of a
// storage.
type tensorRef struct {
	storage *storageRef
	offset  int64
	shape   []int64
	stride  []int64
}

type unpickler struct {
	data  []byte
	pos   int
	stack []any
	memo  map[int64]any
}

// unpickle decodes a torch.save data.pkl stream.
func unpickle(data []byte) (any, error) {
	u := &unpickler{data: data, memo: map[int64]any{}}
	v, err := u.run()
	if err != nil {
		return nil, fmt.Errorf("data.pkl offset %d: %w", u.pos, err)
	}
	return v, nil
}

func (u *unpickler) read(n int) ([]byte, error) {
	if n < 0 || u.pos+n > len(u.data) {
		return nil, fmt.Errorf("truncated pickle")
	}
	b := u.data[u.pos : u.pos+n]
	u.pos += n
	return b, nil
}

func (u *unpickler) readLine() (string, error) {
	for i := u.pos; i < len(u.data); i++ {
		if u.data[i] == '\n' {
			s := string(u.data[u.pos:i])
			u.pos = i + 1
			return s, nil
		}
	}
	return "", fmt.Errorf("truncated pickle (unterminated line)")
}

func (u *unpickler) push(v any) { u.stack = append(u.stack, v) }

func (u *unpickler) pop() (any, error) {
	if len(u.stack) == 0 {
		return nil, fmt.Errorf("pickle stack underflow")
	}
	v := u.stack[len(u.stack)-1]
	u.stack = u.stack[:len(u.stack)-1]
	if _, ok := v.(pyMark); ok {
		return nil, fmt.Errorf("unexpected MARK on the pickle stack")
	}
	return v, nil
}

// popMark pops everything down to the last MARK and returns it in order.
func (u *unpickler) popMark() ([]any, error) {
	for i := len(u.stack) - 1; i >= 0; i-- {
		if _, ok := u.stack[i].(pyMark); ok {
			items := append([]any(nil), u.stack[i+1:]...)
			u.stack = u.stack[:i]
			return items, nil
		}
	}
	return nil, fmt.Errorf("no MARK on the pickle stack")
}

func (u *unpickler) top() (any, error) {
	if len(u.stack) == 0 {
		return nil, fmt.Errorf("pickle stack underflow")
	}
	return u.stack[len(u.stack)-1], nil
}

func (u *unpickler) run() (any, error) {
	for {
		opb, err := u.read(1)
		if err != nil {
			return nil, err
		}
		op := opb[0]
		switch op {
		case opProto:
			b, err := u.read(1)
			if err != nil {
				return nil, err
			}
			if b[0] < 2 || b[0] > 5 {
				return nil, fmt.Errorf("unsupported pickle protocol %d", b[0])
			}
		case opFrame:
			if _, err := u.read(8); err != nil {
				return nil, err
			}
		case opStop:
			v, err := u.pop()
			if err != nil {
				return nil, err
			}
			return v, nil
		case opMark:
			u.push(pyMark{})
		case opEmptyDict:
			u.push(newDict())
		case opEmptyList:
			u.push(&pyList{})
		case opEmptyTuple:
			u.push(pyTuple{})
		case opTuple:
			items, err := u.popMark()
			if err != nil {
				return nil, err
			}
			u.push(pyTuple(items))
		case opTuple1, opTuple2, opTuple3:
			n := int(op-opTuple1) + 1
			t := make(pyTuple, n)
			for i := n - 1; i >= 0; i-- {
				if t[i], err = u.pop(); err != nil {
					return nil, err
				}
			}
			u.push(t)
		case opBinUnicode, opShortBinUni:
			var n int
			if op == opBinUnicode {
				b, err := u.read(4)
				if err != nil {
					return nil, err
				}
				n = int(binary.LittleEndian.Uint32(b))
			} else {
				b, err := u.read(1)
				if err != nil {
					return nil, err
				}
				n = int(b[0])
			}
			b, err := u.read(n)
			if err != nil {
				return nil, err
			}
			u.push(string(b))
		case opBinInt:
			b, err := u.read(4)
			if err != nil {
				return nil, err
			}
			u.push(int64(int32(binary.LittleEndian.Uint32(b))))
		case opBinInt1:
			b, err := u.read(1)
			if err != nil {
				return nil, err
			}
			u.push(int64(b[0]))
		case opBinInt2:
			b, err := u.read(2)
			if err != nil {
				return nil, err
			}
			u.push(int64(binary.LittleEndian.Uint16(b)))
		case opLong1:
			nb, err := u.read(1)
			if err != nil {
				return nil, err
			}
			b, err := u.read(int(nb[0]))
			if err != nil {
				return nil, err
			}
			v, err := decodeLong(b)
			if err != nil {
				return nil, err
			}
			u.push(v)
		case opBinFloat:
			b, err := u.read(8)
			if err != nil {
				return nil, err
			}
			u.push(math.Float64frombits(binary.BigEndian.Uint64(b)))
		case opNewTrue:
			u.push(true)
		case opNewFalse:
			u.push(false)
		case opNone:
			u.push(nil)
		case opGlobal:
			mod, err := u.readLine()
			if err != nil {
				return nil, err
			}
			name, err := u.readLine()
			if err != nil {
				return nil, err
			}
			g := pyGlobal{mod, name}
			if !allowedGlobals[g] {
				return nil, fmt.Errorf("refusing global %s: not a tensor, storage or OrderedDict (model.pt may only hold a state_dict)", g)
			}
			u.push(g)
		case opStackGlobal:
			nameV, err := u.pop()
			if err != nil {
				return nil, err
			}
			modV, err := u.pop()
			if err != nil {
				return nil, err
			}
			mod, ok1 := modV.(string)
			name, ok2 := nameV.(string)
			if !ok1 || !ok2 {
				return nil, fmt.Errorf("STACK_GLOBAL needs two strings")
			}
			g := pyGlobal{mod, name}
			if !allowedGlobals[g] {
				return nil, fmt.Errorf("refusing global %s: not a tensor, storage or OrderedDict (model.pt may only hold a state_dict)", g)
			}
			u.push(g)
		case opBinPersID:
			pid, err := u.pop()
			if err != nil {
				return nil, err
			}
			s, err := persistentStorage(pid)
			if err != nil {
				return nil, err
			}
			u.push(s)
		case opReduce:
			args, err := u.pop()
			if err != nil {
				return nil, err
			}
			fn, err := u.pop()
			if err != nil {
				return nil, err
			}
			v, err := reduce(fn, args)
			if err != nil {
				return nil, err
			}
			u.push(v)
		case opBuild:
			state, err := u.pop()
			if err != nil {
				return nil, err
			}
			obj, err := u.top()
			if err != nil {
				return nil, err
			}
			d, ok := obj.(*pyDict)
			if !ok {
				return nil, fmt.Errorf("BUILD on unsupported object %T", obj)
			}
			sd, ok := state.(*pyDict)
			if !ok {
				return nil, fmt.Errorf("BUILD with unsupported state %T", state)
			}
			d.attrs = sd
		case opSetItem:
			v, err := u.pop()
			if err != nil {
				return nil, err
			}
			k, err := u.pop()
			if err != nil {
				return nil, err
			}
			obj, err := u.top()
			if err != nil {
				return nil, err
			}
			d, ok := obj.(*pyDict)
			if !ok {
				return nil, fmt.Errorf("SETITEM on %T", obj)
			}
			if err := d.set(k, v); err != nil {
				return nil, err
			}
		case opSetItems:
			items, err := u.popMark()
			if err != nil {
				return nil, err
			}
			obj, err := u.top()
			if err != nil {
				return nil, err
			}
			d, ok := obj.(*pyDict)
			if !ok {
				return nil, fmt.Errorf("SETITEMS on %T", obj)
			}
			if len(items)%2 != 0 {
				return nil, fmt.Errorf("SETITEMS with an odd number of items")
			}
			for i := 0; i < len(items); i += 2 {
				if err := d.set(items[i], items[i+1]); err != nil {
					return nil, err
				}
			}
		case opAppend, opAppends:
			var items []any
			if op == opAppend {
				v, err := u.pop()
				if err != nil {
					return nil, err
				}
				items = []any{v}
			} else if items, err = u.popMark(); err != nil {
				return nil, err
			}
			obj, err := u.top()
			if err != nil {
				return nil, err
			}
			l, ok := obj.(*pyList)
			if !ok {
				return nil, fmt.Errorf("APPEND on %T", obj)
			}
			l.items = append(l.items, items...)
		case opBinPut, opLongBinPut, opMemoize:
			var idx int64
			switch op {
			case opBinPut:
				b, err := u.read(1)
				if err != nil {
					return nil, err
				}
				idx = int64(b[0])
			case opLongBinPut:
				b, err := u.read(4)
				if err != nil {
					return nil, err
				}
				idx = int64(binary.LittleEndian.Uint32(b))
			default:
				idx = int64(len(u.memo))
			}
			v, err := u.top()
			if err != nil {
				return nil, err
			}
			u.memo[idx] = v
		case opBinGet, opLongBinGet:
			var idx int64
			if op == opBinGet {
				b, err := u.read(1)
				if err != nil {
					return nil, err
				}
				idx = int64(b[0])
			} else {
				b, err := u.read(4)
				if err != nil {
					return nil, err
				}
				idx = int64(binary.LittleEndian.Uint32(b))
			}
			v, ok := u.memo[idx]
			if !ok {
				return nil, fmt.Errorf("memo key %d not defined", idx)
			}
			u.push(v)
		default:
			return nil, fmt.Errorf("unsupported pickle opcode 0x%02x (%q): model.pt may only hold a torch.save'd state_dict", op, rune(op))
		}
	}
}

// decodeLong decodes LONG1's little-endian two's-complement integer.
func decodeLong(b []byte) (int64, error) {
	if len(b) == 0 {
		return 0, nil
	}
	be := make([]byte, len(b))
	for i := range b {
		be[len(b)-1-i] = b[i]
	}
	v := new(big.Int).SetBytes(be)
	if b[len(b)-1]&0x80 != 0 {
		v.Sub(v, new(big.Int).Lsh(big.NewInt(1), uint(8*len(b))))
	}
	if !v.IsInt64() {
		return 0, fmt.Errorf("integer %s out of range", v)
	}
	return v.Int64(), nil
}

// persistentStorage interprets torch's persistent id
// ('storage', StorageClass, key, location, numel).
func persistentStorage(pid any) (*storageRef, error) {
	t, ok := pid.(pyTuple)
	if !ok || len(t) != 5 {
		return nil, fmt.Errorf("unsupported persistent id %v", pid)
	}
	if s, _ := t[0].(string); s != "storage" {
		return nil, fmt.Errorf("unsupported persistent id kind %v", t[0])
	}
	g, ok := t[1].(pyGlobal)
	if !ok || g.module != "torch" {
		return nil, fmt.Errorf("unsupported storage type %v", t[1])
	}
	if _, ok := storageElemSize(g.name); !ok {
		return nil, fmt.Errorf("unsupported storage type %s", g)
	}
	key, ok1 := t[2].(string)
	numel, ok2 := t[4].(int64)
	if !ok1 || !ok2 || numel < 0 {
		return nil, fmt.Errorf("malformed storage reference %v", pid)
	}
	return &storageRef{class: g.name, key: key, numel: numel}, nil
}

func storageElemSize(class string) (int, bool) {
	switch class {
	case "FloatStorage":
		return 4, true
	case "BFloat16Storage", "HalfStorage":
		return 2, true
	case "DoubleStorage":
		return 8, true
	}
	return 0, false
}

// reduce applies a whitelisted callable.
func reduce(fn, args any) (any, error) {
	g, ok := fn.(pyGlobal)
	if !ok {
		return nil, fmt.Errorf("REDUCE on non-global %T", fn)
	}
	a, ok := args.(pyTuple)
	if !ok {
		return nil, fmt.Errorf("REDUCE %s: arguments are %T, not a tuple", g, args)
	}
	switch g {
	case pyGlobal{"collections", "OrderedDict"}:
		if len(a) != 0 {
			return nil, fmt.Errorf("OrderedDict with constructor arguments is not supported")
		}
		return newDict(), nil
	case pyGlobal{"torch._utils", "_rebuild_tensor_v2"}:
		// (storage, storage_offset, size, stride, requires_grad,
		//  backward_hooks[, metadata])
		if len(a) < 6 || len(a) > 7 {
			return nil, fmt.Errorf("_rebuild_tensor_v2 with %d arguments", len(a))
		}
		st, ok := a[0].(*storageRef)
		if !ok {
			return nil, fmt.Errorf("_rebuild_tensor_v2: storage is %T", a[0])
		}
		off, ok := a[1].(int64)
		if !ok {
			return nil, fmt.Errorf("_rebuild_tensor_v2: offset is %T", a[1])
		}
		shape, err := intTuple(a[2])
		if err != nil {
			return nil, fmt.Errorf("_rebuild_tensor_v2 size: %w", err)
		}
		stride, err := intTuple(a[3])
		if err != nil {
			return nil, fmt.Errorf("_rebuild_tensor_v2 stride: %w", err)
		}
		if len(shape) != len(stride) {
			return nil, fmt.Errorf("_rebuild_tensor_v2: size %v and stride %v differ in rank", shape, stride)
		}
		if hooks, ok := a[5].(*pyDict); !ok || len(hooks.keys) != 0 {
			return nil, fmt.Errorf("_rebuild_tensor_v2: backward hooks are not supported")
		}
		if len(a) == 7 && a[6] != nil {
			if m, ok := a[6].(*pyDict); !ok || len(m.keys) != 0 {
				return nil, fmt.Errorf("_rebuild_tensor_v2: tensor metadata is not supported")
			}
		}
		return &tensorRef{storage: st, offset: off, shape: shape, stride: stride}, nil
	case pyGlobal{"torch._utils", "_rebuild_parameter"}:
		// (data, requires_grad, backward_hooks)
		if len(a) != 3 {
			return nil, fmt.Errorf("_rebuild_parameter with %d arguments", len(a))
		}
		t, ok := a[0].(*tensorRef)
		if !ok {
			return nil, fmt.Errorf("_rebuild_parameter: data is %T", a[0])
		}
		return t, nil
	}
	return nil, fmt.Errorf("refusing to call %s", g)
}

func intTuple(v any) ([]int64, error) {
	t, ok := v.(pyTuple)
	if !ok {
		return nil, fmt.Errorf("expected a tuple of ints, got %T", v)
	}
	out := make([]int64, len(t))
	for i, x := range t {
		n, ok := x.(int64)
		if !ok || n < 0 {
			return nil, fmt.Errorf("expected a tuple of non-negative ints, got %v", t)
		}
		out[i] = n
	}
	return out, nil
}
