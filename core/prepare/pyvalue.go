package prepare

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"unicode"
)

// MyPT reads JSON with Python, and formats values with str() (f-strings)
// and tests them with Python truthiness. These helpers give the same
// results for JSON values so serialization matches byte for byte.

// pyStr is Python's str() of a JSON scalar: strings as they are, null as
// "None", booleans as "True"/"False", numbers as Python prints the int or
// float json.loads makes of them. Objects and arrays are refused: their
// Python repr is not something a chat message should contain.
func pyStr(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "", nil
	}
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", err
		}
		return s, nil
	case 'n':
		return "None", nil
	case 't':
		return "True", nil
	case 'f':
		return "False", nil
	case '{', '[':
		return "", fmt.Errorf("expected a string, got a JSON %s", map[byte]string{'{': "object", '[': "array"}[raw[0]])
	}
	lit := string(raw)
	if !strings.ContainsAny(lit, ".eE") { // a Python int
		if lit == "-0" {
			return "0", nil
		}
		return lit, nil
	}
	f, err := strconv.ParseFloat(lit, 64)
	if err != nil {
		return "", fmt.Errorf("number %s: %w", lit, err)
	}
	return pyFloatRepr(f), nil
}

// pyFloatRepr is Python's repr(float): the shortest digits that round-trip,
// in positional notation when the decimal exponent is in [-4, 16), with
// ".0" added to integral values, and in exponent form ("1e-05",
// "1.5e+16") otherwise.
func pyFloatRepr(f float64) string {
	e := strconv.FormatFloat(f, 'e', -1, 64) // [-]d[.ddd]e±XX
	neg := strings.HasPrefix(e, "-")
	e = strings.TrimPrefix(e, "-")
	mant, expStr, _ := strings.Cut(e, "e")
	digits := strings.Replace(mant, ".", "", 1)
	exp, _ := strconv.Atoi(expStr)
	decpt := exp + 1 // value = 0.digits * 10^decpt
	var s string
	if decpt > -4 && decpt <= 16 {
		switch {
		case decpt <= 0:
			s = "0." + strings.Repeat("0", -decpt) + digits
		case decpt >= len(digits):
			s = digits + strings.Repeat("0", decpt-len(digits)) + ".0"
		default:
			s = digits[:decpt] + "." + digits[decpt:]
		}
	} else {
		s = digits[:1]
		if len(digits) > 1 {
			s += "." + digits[1:]
		}
		sign := "+"
		if exp < 0 {
			sign, exp = "-", -exp
		}
		s += fmt.Sprintf("e%s%02d", sign, exp)
	}
	if neg {
		s = "-" + s
	}
	return s
}

// pyTruthy is Python truthiness of a JSON value: false for null, false, 0,
// 0.0, "", [] and {}.
func pyTruthy(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return false
	}
	switch raw[0] {
	case 'n', 'f':
		return false
	case 't':
		return true
	case '"':
		return len(raw) > 2
	case '[', '{':
		return len(bytes.TrimSpace(raw[1:len(raw)-1])) > 0
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	return err == nil && f != 0
}

// pyIsSpace is Python's str.isspace() for one character; it adds the
// information separators U+001C..U+001F to Go's unicode.IsSpace.
func pyIsSpace(r rune) bool {
	return unicode.IsSpace(r) || (r >= 0x1c && r <= 0x1f)
}

// pyStrip is Python's str.strip() with no arguments.
func pyStrip(s string) string { return strings.TrimFunc(s, pyIsSpace) }

// pySplitJoin is Python's " ".join(s.split()): whitespace runs collapsed to
// one space, leading and trailing whitespace dropped.
func pySplitJoin(s string) string { return strings.Join(strings.FieldsFunc(s, pyIsSpace), " ") }
