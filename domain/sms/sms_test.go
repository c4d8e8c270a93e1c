package sms

import (
	"strings"
	"testing"
	"unicode/utf16"
	"unicode/utf8"
)

func TestAnalyze(t *testing.T) {
	a := strings.Repeat
	tests := []struct {
		name string
		body string
		want Info
	}{
		{"empty", "", Info{GSM7, 0, 0, 0}},
		{"short ascii", "Hello", Info{GSM7, 5, 1, 5}},
		{"gsm7 exactly one sms", a("a", 160), Info{GSM7, 160, 1, 160}},
		{"gsm7 one over", a("a", 161), Info{GSM7, 161, 2, 161}},
		{"gsm7 exactly two parts", a("a", 153*2), Info{GSM7, 306, 2, 306}},
		{"gsm7 one over two parts", a("a", 153*2+1), Info{GSM7, 307, 3, 307}},
		{"euro alone is two septets", "€", Info{GSM7, 2, 1, 1}},
		{"extension chars count twice", "{[]}", Info{GSM7, 8, 1, 4}},
		{"form feed is an extension char", "\f", Info{GSM7, 2, 1, 1}},
		{"escape fits at 160", a("a", 158) + "€", Info{GSM7, 160, 1, 159}},
		{"escape pushes over 160", a("a", 159) + "€", Info{GSM7, 161, 2, 160}},
		// 152 'a' + '€' is 154 septets: one SMS, so the 153 limit does not apply.
		{"152 a and euro fit one sms", a("a", 152) + "€", Info{GSM7, 154, 1, 153}},
		{"escape cannot straddle 153", a("a", 152) + "€" + a("a", 7), Info{GSM7, 161, 2, 160}},
		{
			// 306 septets would fit two parts, but the euro does not fit in
			// the first part's last septet and pushes a character out.
			"straddling escape adds a segment",
			a("a", 152) + "€" + a("a", 152), Info{GSM7, 306, 3, 305},
		},
		{"80 euros fit one sms", a("€", 80), Info{GSM7, 160, 1, 80}},
		{"153 euros need three parts", a("€", 153), Info{GSM7, 306, 3, 153}},
		{"e acute is gsm", "café", Info{GSM7, 4, 1, 4}},
		{"e circumflex is not", "crêpe", Info{UCS2, 5, 1, 5}},
		{"capital c cedilla is gsm", "Ça va", Info{GSM7, 5, 1, 5}},
		{"small c cedilla is not", "garçon", Info{UCS2, 6, 1, 6}},
		{"greek capitals in the table", "ΔΦΓΛΩΠΨΣΘΞ", Info{GSM7, 10, 1, 10}},
		{"greek capital alpha is not", "ΑΒΓ", Info{UCS2, 3, 1, 3}},
		{"greek small letters are not", "αβγ", Info{UCS2, 3, 1, 3}},
		{"cr lf", "a\r\nb", Info{GSM7, 4, 1, 4}},
		{"tab forces ucs2", "a\tb", Info{UCS2, 3, 1, 3}},
		{"backtick forces ucs2", "`a`", Info{UCS2, 3, 1, 3}},
		{"gsm basic punctuation", "@£$¥¤¡¿§_!\"#%&'()*+,-./:;<=>?", Info{GSM7, 29, 1, 29}},
		{"emoji forces ucs2 and is two units", "Hi 😀", Info{UCS2, 5, 1, 4}},
		{"euro is one unit in ucs2", "€ж", Info{UCS2, 2, 1, 2}},
		{"ucs2 exactly one sms", a("ж", 70), Info{UCS2, 70, 1, 70}},
		{"ucs2 one over", a("ж", 71), Info{UCS2, 71, 2, 71}},
		{"ucs2 exactly two parts", a("ж", 134), Info{UCS2, 134, 2, 134}},
		{"ucs2 one over two parts", a("ж", 135), Info{UCS2, 135, 3, 135}},
		{"35 emoji fit one sms", a("😀", 35), Info{UCS2, 70, 1, 35}},
		{"36 emoji need two parts", a("😀", 36), Info{UCS2, 72, 2, 36}},
		{"surrogate pair past 67 in one sms", a("ж", 66) + "😀", Info{UCS2, 68, 1, 67}},
		{"surrogate pair cannot straddle 67", a("ж", 66) + "😀" + a("ж", 3), Info{UCS2, 71, 2, 70}},
		{
			// 134 units would fit two parts, but the emoji does not fit in
			// the first part's last unit and pushes a character out.
			"straddling surrogate pair adds a segment",
			a("ж", 66) + "😀" + a("ж", 66), Info{UCS2, 134, 3, 133},
		},
		{"invalid utf-8 is one replacement unit", "a\xffb", Info{UCS2, 3, 1, 3}},
		{"escape character itself is not gsm", "a\x1bb", Info{UCS2, 3, 1, 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Analyze(tt.body); got != tt.want {
				t.Errorf("Analyze = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestSplit(t *testing.T) {
	a := strings.Repeat
	tests := []struct {
		name string
		body string
		want []string
	}{
		{"empty", "", nil},
		{"one sms", "Hello", []string{"Hello"}},
		{"gsm7 161", a("a", 161), []string{a("a", 153), a("a", 8)}},
		{"escape moves to next part", a("a", 152) + "€" + a("a", 10), []string{a("a", 152), "€" + a("a", 10)}},
		{
			"escape straddle makes three",
			a("a", 152) + "€" + a("a", 152),
			[]string{a("a", 152), "€" + a("a", 151), "a"},
		},
		{"escape fills part exactly", a("a", 151) + "€" + a("b", 10), []string{a("a", 151) + "€", a("b", 10)}},
		{"ucs2 71", a("ж", 71), []string{a("ж", 67), a("ж", 4)}},
		{
			"surrogate pair moves to next part",
			a("ж", 66) + "😀" + a("ж", 66),
			[]string{a("ж", 66), "😀" + a("ж", 65), "ж"},
		},
		{"surrogate pair fills part exactly", a("ж", 65) + "😀" + a("ж", 4), []string{a("ж", 65) + "😀", a("ж", 4)}},
		{
			// In a UCS-2 body the euro is one unit, not an escape sequence.
			"gsm chars count one unit in ucs2",
			"ж" + a("€", 70), []string{"ж" + a("€", 66), a("€", 4)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Split(tt.body)
			if len(got) != len(tt.want) {
				t.Fatalf("Split gave %d segments %q, want %d", len(got), got, len(tt.want))
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("segment %d = %q, want %q", i, got[i], tt.want[i])
				}
			}
		})
	}
}

// referenceUnits measures s in enc without the package's code: septets from
// the transcribed standard tables, UTF-16 units from the standard library.
// ok is false if s is not representable in enc.
func referenceUnits(s string, enc Encoding) (units int, ok bool) {
	if enc == UCS2 {
		return len(utf16.Encode([]rune(s))), true
	}
	for _, r := range s {
		c := referenceSeptets[r]
		if c == 0 {
			return 0, false
		}
		units += c
	}
	return units, true
}

func FuzzAnalyze(f *testing.F) {
	for _, s := range []string{
		"", "Hello", strings.Repeat("a", 161), strings.Repeat("a", 152) + "€",
		strings.Repeat("€", 153), strings.Repeat("ж", 66) + "😀" + strings.Repeat("ж", 66),
		"crêpe", "ΔΦΓ\r\n", "a\xffb", "\xed\xa0\x80", strings.Repeat("😀", 36),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		info := Analyze(body)
		segments := Split(body)

		if got := strings.Join(segments, ""); got != body {
			t.Fatalf("segments rejoin to %q, want %q", got, body)
		}
		if info.Segments != len(segments) {
			t.Fatalf("Analyze counts %d segments, Split returns %d", info.Segments, len(segments))
		}
		if (body == "") != (info.Segments == 0) {
			t.Fatalf("%d segments for a body of %d bytes", info.Segments, len(body))
		}
		if n := utf8.RuneCountInString(body); info.Characters != n {
			t.Fatalf("Characters = %d, want %d", info.Characters, n)
		}
		wantUnits, isGSM := referenceUnits(body, GSM7)
		if !isGSM {
			wantUnits, _ = referenceUnits(body, UCS2)
		}
		if wantEnc := map[bool]Encoding{true: GSM7, false: UCS2}[isGSM]; info.Encoding != wantEnc {
			t.Fatalf("Encoding = %s, want %s", info.Encoding, wantEnc)
		}
		if info.Units != wantUnits {
			t.Fatalf("Units = %d, want %d", info.Units, wantUnits)
		}

		single, part := gsm7Single, gsm7Part
		if info.Encoding == UCS2 {
			single, part = ucs2Single, ucs2Part
		}
		limit := part
		if len(segments) == 1 {
			limit = single
		}
		sum := 0
		for i, seg := range segments {
			u, ok := referenceUnits(seg, info.Encoding)
			if !ok || u == 0 || u > limit {
				t.Fatalf("segment %d %q has %d units (representable %v), limit %d", i, seg, u, ok, limit)
			}
			sum += u
			// Greedy packing is what makes the count minimal: a segment ends
			// only because the next character would not fit.
			if i+1 < len(segments) {
				r, _ := utf8.DecodeRuneInString(segments[i+1])
				next, _ := referenceUnits(string(r), info.Encoding)
				if u+next <= limit {
					t.Fatalf("segment %d ends at %d units although %q (%d) fits in %d", i, u, r, next, limit)
				}
			}
		}
		// A split inside a character would change how the pieces decode, and
		// so their unit counts.
		if sum != info.Units {
			t.Fatalf("segments hold %d units in all, the body %d", sum, info.Units)
		}
	})
}

func BenchmarkAnalyze(b *testing.B) {
	bodies := []struct{ name, body string }{
		{"ascii-short", "Your verification code is 483920. It expires in 10 minutes. Do not share it."},
		{"ucs2-short", "Ваш код подтверждения: 483920. Он действителен 10 минут. 🔐"},
		{"gsm7-long", strings.Repeat("Lieferung {Nr. 4711} kommt morgen zwischen 8 und 12 Uhr. ", 8)},
	}
	for _, bb := range bodies {
		b.Run(bb.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bb.body)))
			for b.Loop() {
				Analyze(bb.body)
			}
		})
		// The floor any analysis pays: one decoding pass over the same bytes.
		b.Run(bb.name+"/baseline-RuneCount", func(b *testing.B) {
			b.SetBytes(int64(len(bb.body)))
			for b.Loop() {
				utf8.RuneCountInString(bb.body)
			}
		})
	}
}

// TestAnalyzeDoesNotAllocate holds the promise in the package doc: Analyze
// runs once per message of a 100,000-message order.
func TestAnalyzeDoesNotAllocate(t *testing.T) {
	for _, body := range []string{
		"Your code is 483920.",
		strings.Repeat("a", 152) + "€" + strings.Repeat("a", 152),
		strings.Repeat("ж", 66) + "😀" + strings.Repeat("ж", 66),
	} {
		if n := testing.AllocsPerRun(100, func() { Analyze(body) }); n != 0 {
			t.Errorf("Analyze(%.20q…) allocates %v times per run", body, n)
		}
	}
}
