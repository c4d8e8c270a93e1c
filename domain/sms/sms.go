// Package sms owns the rules that turn a message body into what an SMS
// network carries and bills: the encoding it needs (GSM 7-bit or UCS-2, per
// 3GPP TS 23.038) and the number of segments it is split into (per
// TS 23.040's concatenation header).
//
// The segment count is what the customer pays for and what a provider
// charges us for, so it must match what a real SMSC does, including its
// refusal to split a character across two segments. It runs for every
// message of an order (up to 100,000), so Analyze does not allocate.
//
// Like all of domain/, this package does no I/O.
package sms

import "unicode/utf8"

// Encoding is the character set a body is sent in. Its values are stable:
// they are stored in events and shown in the API.
type Encoding string

// The two encodings of the default SMS character sets. GSM 7-bit packs a
// character into 7 bits; UCS-2 (in practice UTF-16, so that emoji survive)
// spends 16 bits per code unit and is used as soon as one character of the
// body is not in the GSM alphabet.
const (
	GSM7 Encoding = "gsm7"
	UCS2 Encoding = "ucs2"
)

// Payload sizes, from the 140-octet user data of one SMS (TS 23.040). A
// concatenated message gives 6 octets of every segment to the user data
// header that numbers the parts, leaving 153 septets or 67 UTF-16 units.
const (
	gsm7Single = 160
	gsm7Part   = 153
	ucs2Single = 70
	ucs2Part   = 67
)

// Info describes how a body travels over SMS.
type Info struct {
	Encoding Encoding `json:"encoding"`
	// Units is the body's length in the encoding's own units: septets for
	// GSM7 (an extension-table character such as '€' counts two, its escape
	// included) and UTF-16 code units for UCS2 (an emoji outside the Basic
	// Multilingual Plane counts two).
	Units int `json:"units"`
	// Segments is the number of SMS the body is sent as, and billed as.
	Segments int `json:"segments"`
	// Characters is the number of Unicode code points (runes) in the body,
	// an invalid UTF-8 byte counting as one, the way clients count length.
	Characters int `json:"characters"`
}

// Analyze returns the encoding, length and segment count of body. An empty
// body has zero segments; rejecting it is validation's job, not this one's.
func Analyze(body string) Info {
	info := measure(body)
	limit := partLimit(info)
	if info.Units <= limit {
		// Fits one SMS (or is empty): no boundary to place, and skipping the
		// second pass halves the cost for the common short message.
		info.Segments = min(info.Units, 1)
		return info
	}
	for rest := body; rest != ""; info.Segments++ {
		rest = rest[cut(rest, info.Encoding, limit):]
	}
	return info
}

// Split returns the texts of the segments body is sent as, in order; joined,
// they give body back. Analyze counts exactly these segments, so this is
// also the way to see why a body costs what it costs. An empty body has no
// segments.
func Split(body string) []string {
	info := measure(body)
	limit := partLimit(info)
	var segments []string
	for rest := body; rest != ""; {
		n := cut(rest, info.Encoding, limit)
		segments = append(segments, rest[:n])
		rest = rest[n:]
	}
	return segments
}

// measure finds the encoding and counts units and characters in one pass.
// UTF-16 units are derived from the rune count, because they differ only by
// the runes outside the Basic Multilingual Plane.
//
// The ASCII branch is kept free of conditional jumps: a cost of 0 (not in
// the alphabet) wraps to 0xFF when decremented, so OR-ing in its top bit
// records "not GSM" without a branch. That makes a short Latin body cost
// about one nanosecond per byte.
func measure(body string) Info {
	var notInAlphabet uint8
	septetCount, runeCount, astral := 0, 0, 0
	for i := 0; i < len(body); {
		// A run of ASCII, in a tight loop of its own.
		start := i
		for ; i < len(body) && body[i] < utf8.RuneSelf; i++ {
			c := asciiCost[body[i]&0x7F] // the mask only lets the compiler drop the bounds check
			notInAlphabet |= (c - 1) & 0x80
			septetCount += int(c)
		}
		runeCount += i - start
		if i == len(body) {
			break
		}
		r, size := utf8.DecodeRuneInString(body[i:])
		i += size
		runeCount++
		if r > 0xFFFF {
			astral++
		}
		if notInAlphabet == 0 {
			c := septets(r)
			if c == notGSM {
				notInAlphabet = 0x80
			}
			septetCount += c
		}
	}
	if notInAlphabet == 0 {
		return Info{Encoding: GSM7, Units: septetCount, Characters: runeCount}
	}
	return Info{Encoding: UCS2, Units: runeCount + astral, Characters: runeCount}
}

// partLimit returns how many units each segment of a body described by info
// may hold: the whole single-message payload if the body fits in one SMS,
// the smaller concatenated payload otherwise.
func partLimit(info Info) int {
	if info.Encoding == GSM7 {
		if info.Units <= gsm7Single {
			return gsm7Single
		}
		return gsm7Part
	}
	if info.Units <= ucs2Single {
		return ucs2Single
	}
	return ucs2Part
}

// cut returns the length in bytes of the longest prefix of s that fits in
// limit units of enc without splitting a character. This is where the two
// rules that make segment counts exceed ceil(units/limit) are enforced: the
// escape septet of an extension character never ends a segment without its
// character (an SMSC would render it as a stray space and a wrong glyph),
// and the two halves of a UTF-16 surrogate pair never travel apart (each
// half alone is undisplayable). A character that does not fit starts the
// next segment instead, leaving this one a unit short.
//
// s must be non-empty and, for GSM7, contain only characters of the GSM
// alphabet; limit must be at least 2, so every call makes progress.
func cut(s string, enc Encoding, limit int) int {
	used := 0
	for i := 0; i < len(s); {
		var cost, size int
		if b := s[i]; b < utf8.RuneSelf {
			size, cost = 1, 1
			if enc == GSM7 {
				cost = int(asciiCost[b])
			}
		} else {
			var r rune
			r, size = utf8.DecodeRuneInString(s[i:])
			switch {
			case enc == GSM7:
				cost = septets(r)
			case r > 0xFFFF:
				cost = 2
			default:
				cost = 1
			}
		}
		if used+cost > limit {
			return i
		}
		used += cost
		i += size
	}
	return len(s)
}
