// Package demodata generates the demo's gold chat set: a few hundred short
// conversations in MyPT's JSONL schema with regular tasks a tiny model
// learns in minutes (arithmetic, capitals, word reversal, greetings). It
// draws from CPython's random.Random(20240601) exactly as
// configs/data/gen_chat_demo.py does, so both write the same bytes.
package demodata

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/mypt/mypt/core/chatfmt"
	"github.com/mypt/mypt/core/mtrand"
)

// Seed is the generator's fixed seed.
const Seed = 20240601

var capitals = [][2]string{
	{"France", "Paris"}, {"Germany", "Berlin"}, {"Italy", "Rome"}, {"Spain", "Madrid"},
	{"Portugal", "Lisbon"}, {"Austria", "Vienna"}, {"Switzerland", "Bern"}, {"Poland", "Warsaw"},
	{"Norway", "Oslo"}, {"Sweden", "Stockholm"}, {"Finland", "Helsinki"}, {"Denmark", "Copenhagen"},
	{"Ireland", "Dublin"}, {"Greece", "Athens"}, {"Hungary", "Budapest"}, {"Japan", "Tokyo"},
	{"China", "Beijing"}, {"India", "New Delhi"}, {"Egypt", "Cairo"}, {"Kenya", "Nairobi"},
	{"Canada", "Ottawa"}, {"Mexico", "Mexico City"}, {"Brazil", "Brasilia"}, {"Argentina", "Buenos Aires"},
	{"Peru", "Lima"}, {"Australia", "Canberra"}, {"Russia", "Moscow"}, {"Turkey", "Ankara"},
	{"Thailand", "Bangkok"}, {"Vietnam", "Hanoi"},
}

var words = []string{
	"apple", "river", "garden", "planet", "silver", "window", "rocket", "pencil", "forest", "guitar",
	"candle", "bridge", "winter", "yellow", "mirror", "castle", "dragon", "coffee", "button", "island",
	"tiger", "cloud", "stone", "music", "lemon", "house", "train", "paper", "ocean", "light",
}

var greetings = [][2]string{
	{"Hello!", "Hello! How can I help you today?"},
	{"Hi there", "Hi! What can I do for you?"},
	{"Good morning", "Good morning! How can I help?"},
	{"Thanks!", "You're welcome!"},
	{"Who are you?", "I am MyPT, a small assistant."},
	{"Bye", "Goodbye! Have a nice day."},
}

type generator struct{ rng *mtrand.PyRandom }

// exchange is one user question and its gold answer.
type exchange [2]string

func (g *generator) arithmetic() exchange {
	a, b := g.rng.RandInt(0, 20), g.rng.RandInt(0, 20)
	if g.rng.Random() < 0.6 {
		return exchange{fmt.Sprintf("What is %d + %d?", a, b), fmt.Sprintf("%d + %d = %d.", a, b, a+b)}
	}
	a, b = max(a, b), min(a, b)
	return exchange{fmt.Sprintf("What is %d - %d?", a, b), fmt.Sprintf("%d - %d = %d.", a, b, a-b)}
}

func (g *generator) capital() exchange {
	c := capitals[g.rng.RandBelow(len(capitals))]
	qs := []string{"What is the capital of " + c[0] + "?", "Name the capital of " + c[0] + ".",
		"Which city is the capital of " + c[0] + "?"}
	return exchange{qs[g.rng.RandBelow(len(qs))], "The capital of " + c[0] + " is " + c[1] + "."}
}

func (g *generator) reverse() exchange {
	w := words[g.rng.RandBelow(len(words))]
	r := []rune(w)
	for i, j := 0, len(r)-1; i < j; i, j = i+1, j-1 {
		r[i], r[j] = r[j], r[i]
	}
	return exchange{"Reverse the word: " + w, string(r)}
}

func (g *generator) greeting() exchange {
	return exchange(greetings[g.rng.RandBelow(len(greetings))])
}

// Conversations returns the demo set, in the generator's shuffled order;
// each conversation alternates user and assistant turns.
func Conversations() [][]exchange {
	g := &generator{rng: mtrand.NewPyRandom(Seed)}
	var rows [][]exchange
	for _, task := range []struct {
		make func() []exchange
		n    int
	}{
		{func() []exchange { return []exchange{g.arithmetic()} }, 130},
		{func() []exchange { return []exchange{g.capital()} }, 100},
		{func() []exchange { return []exchange{g.reverse()} }, 80},
		{func() []exchange { return []exchange{g.greeting()} }, 30},
		{func() []exchange {
			first := exchange(greetings[g.rng.RandBelow(3)])
			second := []func() exchange{g.arithmetic, g.capital, g.reverse}[g.rng.RandBelow(3)]()
			return []exchange{first, second}
		}, 40},
	} {
		for range task.n {
			rows = append(rows, task.make())
		}
	}
	g.rng.Shuffle(len(rows), func(i, j int) { rows[i], rows[j] = rows[j], rows[i] })
	return rows
}

// Write writes the demo set as JSONL, formatted as Python's json.dumps
// (", " and ": " separators).
func Write(w io.Writer) error {
	bw := bufio.NewWriter(w)
	for _, conv := range Conversations() {
		var msgs []string
		for _, ex := range conv {
			msgs = append(msgs,
				`{"role": "user", "content": `+quote(ex[0])+`}`,
				`{"role": "assistant", "content": `+quote(ex[1])+`}`)
		}
		fmt.Fprintf(bw, `{"system": %s, "messages": [%s]}`+"\n", quote(chatfmt.DefaultSystemPrompt), strings.Join(msgs, ", "))
	}
	return bw.Flush()
}

func quote(s string) string {
	var sb strings.Builder
	enc := json.NewEncoder(&sb)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)
	return strings.TrimSuffix(sb.String(), "\n")
}
