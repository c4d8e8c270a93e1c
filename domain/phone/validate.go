package phone

import (
	"regexp"
	"slices"
	"strconv"
	"sync"

	"github.com/nyaruka/phonenumbers"
)

// Why Parse does not call phonenumbers.Parse and phonenumbers.IsValidNumber.
//
// BenchmarkParse runs both side by side: on the 2-core machine the
// library's way costs 17-80 µs a number (75 allocations), most of it not
// matching but rebuilding each metadata pattern string ("^(?:" + pattern +
// ")$", some of them kilobytes long) on every call to look up its compiled
// regexp, and the garbage that leaves. At 100,000 numbers per order that is
// seconds of CPU before a 202. This path costs under 2 µs and allocates
// nothing for a valid number.
//
// For E.164 input neither is needed in that form. Parse's leniency
// (punctuation, letters, extensions, national prefixes) is what the form
// check refuses anyway, and E.164 already splits into country code and
// national significant number. Validity is then the rule of
// getNumberTypeHelper applied to the same metadata the library uses
// (phonenumbers.MetadataCollection is the very collection it loaded): the
// number matches its region's general pattern and at least one number type's
// possible lengths and pattern. Here those patterns are compiled once, per
// region on first use, and a number is checked against the mobile type
// first, because SMS destinations mostly are mobiles and any match settles
// validity.
//
// validate_test.go holds this to the library: every example number of every
// region and type, mutations of them, and a fuzz test must get the same
// verdict and region from both.

// numberDesc is one number type's rule: the national significant number's
// length must be one of lengths (when any are listed) and match pattern.
type numberDesc struct {
	lengths []int32
	pattern *regexp.Regexp
}

func (d numberDesc) matches(nsn string) bool {
	if len(d.lengths) > 0 && !slices.Contains(d.lengths, int32(len(nsn))) {
		return false
	}
	return d.pattern.MatchString(nsn)
}

// regionRules is one region's compiled metadata.
type regionRules struct {
	countryCode int
	// leadingDigits, when set, claims the numbers of a shared country code
	// (+1, +44, +7 …) that start this way for this region.
	leadingDigits *regexp.Regexp
	general       numberDesc
	// types are the number types that make a number valid, mobile first.
	types []numberDesc
	// trunkPrefix matches a national number that starts the way the
	// region's national (trunk) prefix does. The library strips such a
	// prefix even from international input when what is left is still a
	// possible number, and then judges a different number than the one
	// given; numbers it matches are left to the library (see trunkCheck).
	trunkPrefix *regexp.Regexp
}

func (r *regionRules) valid(nsn string) bool {
	if !r.general.matches(nsn) {
		return false
	}
	for _, t := range r.types {
		if t.matches(nsn) {
			return true
		}
	}
	return false
}

func compileRules(md *phonenumbers.PhoneMetadata) *regionRules {
	desc := func(d *phonenumbers.PhoneNumberDesc) numberDesc {
		// A missing description has an empty pattern, which like the
		// library's "^(?:)$" matches no national number.
		return numberDesc{
			lengths: d.GetPossibleLength(),
			pattern: regexp.MustCompile("^(?:" + d.GetNationalNumberPattern() + ")$"),
		}
	}
	r := &regionRules{countryCode: int(md.GetCountryCode()), general: desc(md.GetGeneralDesc())}
	if ld := md.GetLeadingDigits(); ld != "" {
		r.leadingDigits = regexp.MustCompile("^(?:" + ld + ")")
	}
	prefix := md.GetNationalPrefixForParsing()
	if prefix == "" {
		prefix = md.GetNationalPrefix()
	}
	if prefix != "" {
		r.trunkPrefix = regexp.MustCompile("^(?:" + prefix + ")")
	}
	// With the same pattern for both, the library only ever asks the fixed
	// line description, so the mobile one must not be asked here either:
	// its possible lengths may differ.
	if !md.GetSameMobileAndFixedLinePattern() {
		r.types = append(r.types, desc(md.GetMobile()))
	}
	for _, d := range []*phonenumbers.PhoneNumberDesc{
		md.GetFixedLine(), md.GetPremiumRate(), md.GetTollFree(), md.GetSharedCost(),
		md.GetVoip(), md.GetPersonalNumber(), md.GetPager(), md.GetUan(), md.GetVoicemail(),
	} {
		r.types = append(r.types, desc(d))
	}
	return r
}

// rulesByRegion maps each geographic region to a function that compiles
// its rules on first use and returns the same rules after. It is built once
// and never changed, so concurrent Parse calls share it without locks;
// compiling every region up front would cost each process (and each test
// binary) thousands of regexp compilations for the few regions it sees.
var rulesByRegion = sync.OnceValue(func() map[string]func() *regionRules {
	coll, err := phonenumbers.MetadataCollection()
	if err != nil {
		// The library panics at init on the same embedded data, so this is
		// unreachable short of a corrupt build.
		panic("phone: phonenumbers metadata: " + err.Error())
	}
	m := make(map[string]func() *regionRules)
	for _, md := range coll.GetMetadata() {
		if id := md.GetId(); isAlpha2(id) {
			m[id] = sync.OnceValue(func() *regionRules { return compileRules(md) })
		}
	}
	return m
})

func rulesFor(region string) *regionRules {
	if compile := rulesByRegion()[region]; compile != nil {
		return compile()
	}
	return nil
}

// countryCode splits an E.164 digit string the way E.164 is built: country
// codes are prefix-free, so the first 1, 2 or 3 digits that name one are it.
// It returns 0 if none does.
func countryCode(digits string) (cc, n int) {
	for n = 1; n <= 3 && n <= len(digits); n++ {
		cc = cc*10 + int(digits[n-1]-'0')
		if len(phonenumbers.GetRegionCodesForCountryCode(cc)) > 0 {
			return cc, n
		}
	}
	return 0, 0
}

// validate tells the region of the national significant number nsn under
// country code cc, or why it is not a valid number. The region is resolved
// as phonenumbers.GetRegionCodeForNumber does, and validity is then judged
// against that region's rules only, as phonenumbers.IsValidNumber does.
func validate(cc int, nsn string) (string, error) {
	if len(nsn) < 2 {
		return "", invalid("too short")
	}
	regions := phonenumbers.GetRegionCodesForCountryCode(cc)
	if len(regions) == 1 && !isAlpha2(regions[0]) {
		return "", invalid("non-geographic numbers have no region to price or route by")
	}
	region, rules := resolveRegion(regions, nsn)
	if rules == nil || rules.countryCode != cc || !rules.valid(nsn) {
		return "", invalid("no such number in its country's numbering plan")
	}
	if rules.trunkPrefix != nil && rules.trunkPrefix.MatchString(nsn) {
		return trunkCheck(cc, nsn)
	}
	return region, nil
}

// trunkCheck answers, through the library itself, for a valid national
// number that starts like its region's trunk prefix (rare for E.164 input:
// a Belarusian +375 8…, say). The library may read such a number as the
// prefix plus a shorter number; the input is then not the number it
// validates, and it is refused, as the library's own reading would be.
func trunkCheck(cc int, nsn string) (string, error) {
	raw := "+" + strconv.Itoa(cc) + nsn
	n, err := phonenumbers.Parse(raw, "")
	if err != nil || !phonenumbers.IsValidNumber(n) || phonenumbers.Format(n, phonenumbers.E164) != raw {
		return "", invalid("no such number in its country's numbering plan (it reads as a trunk prefix and a shorter number)")
	}
	region := phonenumbers.GetRegionCodeForNumber(n)
	if !isAlpha2(region) {
		return "", invalid("non-geographic numbers have no region to price or route by")
	}
	return region, nil
}

// resolveRegion picks, among the regions sharing a country code, the one
// nsn belongs to: the first that claims it by leading digits or, lacking
// those, by being valid for it.
func resolveRegion(regions []string, nsn string) (string, *regionRules) {
	if len(regions) == 1 {
		return regions[0], rulesFor(regions[0])
	}
	for _, region := range regions {
		rules := rulesFor(region)
		if rules == nil {
			continue
		}
		if rules.leadingDigits != nil {
			if rules.leadingDigits.MatchString(nsn) {
				return region, rules
			}
		} else if rules.valid(nsn) {
			return region, rules
		}
	}
	return "", nil
}

func isAlpha2(s string) bool {
	return len(s) == 2 && s[0] >= 'A' && s[0] <= 'Z' && s[1] >= 'A' && s[1] <= 'Z'
}

// IsRegion reports whether code is a region Parse can give a Number, e.g.
// "GB" but not "UK". Configuration keyed by region (price tables, routes)
// checks its keys with it, because a key no number can have is silently
// never used.
func IsRegion(code string) bool {
	return isAlpha2(code) && rulesByRegion()[code] != nil
}
