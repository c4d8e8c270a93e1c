package sms

import "unicode/utf8"

// The GSM 7-bit default alphabet of 3GPP TS 23.038 §6.2.1, reduced to what
// segment counting needs: how many septets a character costs. A character of
// the basic table costs one septet; a character of the default extension table
// (§6.2.1.1) costs two, the escape septet 0x1B followed by its code. A
// character in neither table cannot be sent in GSM 7-bit at all and forces the
// whole message into UCS-2.
//
// Only the default tables are modelled. National language shift tables
// (TS 23.038 §6.2.1.2, e.g. Turkish or Portuguese) need a UDH element per
// segment, which changes the per-segment limits; providers rarely enable them
// and billing must not assume them.

// Septet costs. notGSM must stay zero so that the zero value of the ASCII
// table below means "not in the alphabet".
const (
	notGSM   = 0
	basic    = 1
	extended = 2
)

// asciiCost gives the septet cost of every ASCII code point, so the common
// case of a Latin-script body is one array load per byte.
//
// Notable holes, all of which force UCS-2: the control characters other than
// LF and CR (a TAB included), '`' (0x60 is '¿' in GSM) and DEL. '$' and '@'
// are in the basic table, just at other positions than in ASCII.
var asciiCost = [utf8.RuneSelf]uint8{
	'\n': basic, '\r': basic,
	'\f': extended, // form feed: ESC 0x0A, a page break in the extension table
	' ':  basic, '!': basic, '"': basic, '#': basic, '$': basic, '%': basic,
	'&': basic, '\'': basic, '(': basic, ')': basic, '*': basic, '+': basic,
	',': basic, '-': basic, '.': basic, '/': basic,
	'0': basic, '1': basic, '2': basic, '3': basic, '4': basic,
	'5': basic, '6': basic, '7': basic, '8': basic, '9': basic,
	':': basic, ';': basic, '<': basic, '=': basic, '>': basic, '?': basic,
	'@': basic,
	'A': basic, 'B': basic, 'C': basic, 'D': basic, 'E': basic, 'F': basic,
	'G': basic, 'H': basic, 'I': basic, 'J': basic, 'K': basic, 'L': basic,
	'M': basic, 'N': basic, 'O': basic, 'P': basic, 'Q': basic, 'R': basic,
	'S': basic, 'T': basic, 'U': basic, 'V': basic, 'W': basic, 'X': basic,
	'Y': basic, 'Z': basic,
	'_': basic,
	'a': basic, 'b': basic, 'c': basic, 'd': basic, 'e': basic, 'f': basic,
	'g': basic, 'h': basic, 'i': basic, 'j': basic, 'k': basic, 'l': basic,
	'm': basic, 'n': basic, 'o': basic, 'p': basic, 'q': basic, 'r': basic,
	's': basic, 't': basic, 'u': basic, 'v': basic, 'w': basic, 'x': basic,
	'y': basic, 'z': basic,
	// The extension table's ASCII members: ESC 0x14, 0x28, 0x29, 0x2F, 0x3C,
	// 0x3D, 0x3E and 0x40.
	'^': extended, '{': extended, '}': extended, '\\': extended,
	'[': extended, '~': extended, ']': extended, '|': extended,
}

// septets returns the number of septets r costs in GSM 7-bit, or notGSM (0)
// when r is not in the default alphabet.
func septets(r rune) int {
	if r < utf8.RuneSelf {
		return int(asciiCost[r])
	}
	switch r {
	// The basic table's non-ASCII members, in table order.
	case '£', '¥', 'è', 'é', 'ù', 'ì', 'ò',
		// 0x09 is drawn as capital Ç in TS 23.038. Unicode's GSM0338.TXT maps
		// it to small ç instead, and encoders disagree; we follow the
		// standard, so ç forces UCS-2. Counting ç as GSM would under-bill a
		// message the provider then sends (and charges) as UCS-2.
		'Ç',
		'Ø', 'ø', 'Å', 'å',
		'Δ', 'Φ', 'Γ', 'Λ', 'Ω', 'Π', 'Ψ', 'Σ', 'Θ', 'Ξ',
		'Æ', 'æ', 'ß', 'É',
		'¤', '¡', 'Ä', 'Ö', 'Ñ', 'Ü', '§', '¿', 'ä', 'ö', 'ñ', 'ü', 'à':
		return basic
	case '€': // ESC 0x65, the only non-ASCII member of the extension table
		return extended
	}
	return notGSM
}
