package sms

import (
	"testing"
	"unicode/utf8"
)

// gsmBasic is the basic table of TS 23.038 §6.2.1 transcribed in code order,
// eight rows of sixteen, so a reviewer can hold it against the standard's
// table. -1 marks 0x1B, the escape to the extension table, which is not a
// character of its own.
var gsmBasic = func() [128]rune {
	rows := []string{
		"@£$¥èéùìòÇ\nØø\rÅå",  // 0x00 (0x09 is drawn as capital Ç in the standard)
		"Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ", // 0x10
		" !\"#¤%&'()*+,-./",   // 0x20 (0x24 is ¤, not $)
		"0123456789:;<=>?",    // 0x30
		"¡ABCDEFGHIJKLMNO",    // 0x40
		"PQRSTUVWXYZÄÖÑÜ§",    // 0x50
		"¿abcdefghijklmno",    // 0x60
		"pqrstuvwxyzäöñüà",    // 0x70
	}
	var t [128]rune
	i := 0
	for _, row := range rows {
		for _, r := range row {
			t[i] = r
			i++
		}
	}
	if i != 128 {
		panic("gsmBasic: transcription has the wrong length")
	}
	t[0x1B] = -1
	return t
}()

// gsmExtension is the default extension table (TS 23.038 §6.2.1.1): the code
// after ESC and the character it stands for.
var gsmExtension = map[byte]rune{
	0x0A: '\f', 0x14: '^', 0x28: '{', 0x29: '}', 0x2F: '\\',
	0x3C: '[', 0x3D: '~', 0x3E: ']', 0x40: '|', 0x65: '€',
}

// referenceSeptets is the cost of r according to the transcribed tables,
// independent of the lookup table and switch that the package uses.
var referenceSeptets = func() map[rune]int {
	m := map[rune]int{}
	for _, r := range gsmBasic {
		if r >= 0 {
			m[r] = 1
		}
	}
	for _, r := range gsmExtension {
		m[r] = 2
	}
	return m
}()

// TestSeptetsMatchesStandardTables checks every Unicode code point, so a
// character missing from, or wrongly added to, the package's tables fails.
func TestSeptetsMatchesStandardTables(t *testing.T) {
	if n := len(referenceSeptets); n != 127+10 {
		t.Fatalf("reference tables hold %d characters, want 137", n)
	}
	for r := rune(0); r <= utf8.MaxRune; r++ {
		if got, want := septets(r), referenceSeptets[r]; got != want {
			t.Errorf("septets(%U %q) = %d, want %d", r, r, got, want)
		}
	}
}

func TestSeptetsLookalikes(t *testing.T) {
	// Characters that look like GSM characters, or that other encoders map
	// to one, but that the default alphabet does not contain.
	tests := []struct {
		r    rune
		want int
	}{
		{'é', 1}, {'ê', 0}, {'É', 1}, {'È', 0},
		{'Ç', 1}, {'ç', 0},
		{'\u0394', 1}, {'\u2206', 0}, // GREEK CAPITAL LETTER DELTA vs INCREMENT
		{'\u03A9', 1}, {'\u2126', 0}, // GREEK CAPITAL LETTER OMEGA vs OHM SIGN
		{'Α', 0}, {'δ', 0}, // Greek capital alpha and small delta
		{'$', 1}, {'¤', 1}, {'`', 0}, {'\t', 0}, {0x1B, 0}, {0x7F, 0},
		{'€', 2}, {'\f', 2}, {'|', 2},
		{utf8.RuneError, 0},
	}
	for _, tt := range tests {
		if got := septets(tt.r); got != tt.want {
			t.Errorf("septets(%U %q) = %d, want %d", tt.r, tt.r, got, tt.want)
		}
	}
}
