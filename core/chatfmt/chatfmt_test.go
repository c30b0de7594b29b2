package chatfmt

import "testing"

// TestSerialization checks the exact strings of docs/MYPT.md §2 (chat serialization).
func TestSerialization(t *testing.T) {
	turns := []Turn{{Role: RoleUser, Content: "Q"}, {Role: RoleAssistant, Content: "A"}}
	if got, want := Episode(turns, Options{}),
		"<myPT_system>You are MyPT.</myPT_system><myPT_user>Q</myPT_user><myPT_assistant>A</myPT_assistant><myPT_eot>"; got != want {
		t.Errorf("Episode = %q\nwant      %q", got, want)
	}
	if got, want := ReplyPrompt(turns[:1], Options{SystemPrompt: "You are helpful."}),
		"<myPT_system>You are helpful.</myPT_system><myPT_user>Q</myPT_user><myPT_assistant>"; got != want {
		t.Errorf("ReplyPrompt = %q, want %q", got, want)
	}
	rag := []Turn{
		{Role: RoleUser, Content: "Q", Context: "C"},
		{Role: RoleAssistantContext, Content: "X"},
		{Role: RoleOther, Content: "dropped"},
		{Role: RoleAssistant, Content: "A", Think: "T", Cite: "S"},
	}
	if got, want := Episode(rag, Options{NoSystemPrompt: true, RAGTags: true}),
		"<myPT_user><myPT_user_context>C</myPT_user_context>Q</myPT_user><myPT_assistant_context>X</myPT_assistant_context>"+
			"<myPT_assistant><myPT_think>T</myPT_think>A<myPT_cite>S</myPT_cite></myPT_assistant><myPT_eot>"; got != want {
		t.Errorf("RAG episode = %q\nwant          %q", got, want)
	}
	if got, want := Episode(rag, Options{NoSystemPrompt: true}),
		"<myPT_user>Q</myPT_user><myPT_assistant>A</myPT_assistant><myPT_eot>"; got != want {
		t.Errorf("without RAG tags = %q, want %q", got, want)
	}
}
