package tokenizer

// BaseVocabSize is the size of GPT-2's byte-level BPE vocabulary
// (ids 0..50256; 50256 is <|endoftext|>).
const BaseVocabSize = 50257

// DefaultVocabSize is MyPT's model vocabulary: the GPT-2 base padded to a
// multiple of 64. Ids 50276..50303 are unused.
const DefaultVocabSize = 50304

// Pinned ids of MyPT's special tokens (core/special_tokens.py,
// SPECIAL_TOKEN_IDS; docs/MYPT.md §3). They never change: checkpoints
// depend on them.
const (
	SystemOpen            uint32 = 50257
	SystemClose           uint32 = 50258
	UserOpen              uint32 = 50259
	UserClose             uint32 = 50260
	AssistantOpen         uint32 = 50261
	AssistantClose        uint32 = 50262
	UserContextOpen       uint32 = 50263
	UserContextClose      uint32 = 50264
	AssistantContextOpen  uint32 = 50265
	AssistantContextClose uint32 = 50266
	ToolcallOpen          uint32 = 50267
	ToolcallClose         uint32 = 50268
	ToolresultOpen        uint32 = 50269
	ToolresultClose       uint32 = 50270
	ThinkOpen             uint32 = 50271
	ThinkClose            uint32 = 50272
	CiteOpen              uint32 = 50273
	CiteClose             uint32 = 50274
	EOT                   uint32 = 50275
)

// Special is one of MyPT's special tokens.
type Special struct {
	Name string // e.g. "myPT_assistant_open"
	Text string // e.g. "<myPT_assistant>"
	ID   uint32
}

// specials is in MyPT's SPECIAL_TOKEN_STRINGS order, which is also id order.
var specials = [...]Special{
	{"myPT_system_open", "<myPT_system>", SystemOpen},
	{"myPT_system_close", "</myPT_system>", SystemClose},
	{"myPT_user_open", "<myPT_user>", UserOpen},
	{"myPT_user_close", "</myPT_user>", UserClose},
	{"myPT_assistant_open", "<myPT_assistant>", AssistantOpen},
	{"myPT_assistant_close", "</myPT_assistant>", AssistantClose},
	{"myPT_user_context_open", "<myPT_user_context>", UserContextOpen},
	{"myPT_user_context_close", "</myPT_user_context>", UserContextClose},
	{"myPT_assistant_context_open", "<myPT_assistant_context>", AssistantContextOpen},
	{"myPT_assistant_context_close", "</myPT_assistant_context>", AssistantContextClose},
	{"myPT_toolcall_open", "<myPT_toolcall>", ToolcallOpen},
	{"myPT_toolcall_close", "</myPT_toolcall>", ToolcallClose},
	{"myPT_toolresult_open", "<myPT_toolresult>", ToolresultOpen},
	{"myPT_toolresult_close", "</myPT_toolresult>", ToolresultClose},
	{"myPT_think_open", "<myPT_think>", ThinkOpen},
	{"myPT_think_close", "</myPT_think>", ThinkClose},
	{"myPT_cite_open", "<myPT_cite>", CiteOpen},
	{"myPT_cite_close", "</myPT_cite>", CiteClose},
	{"myPT_eot", "<myPT_eot>", EOT},
}

// Specials returns MyPT's 19 special tokens in id order.
func Specials() []Special {
	out := make([]Special, len(specials))
	copy(out, specials[:])
	return out
}

// SpecialText returns the tag string of a pinned special id.
func SpecialText(id uint32) (string, bool) {
	if id < SystemOpen || id > EOT {
		return "", false
	}
	return specials[id-SystemOpen].Text, true
}

// SpecialByName returns the special token with the given MyPT name.
func SpecialByName(name string) (Special, bool) {
	for _, s := range specials {
		if s.Name == name {
			return s, true
		}
	}
	return Special{}, false
}
