package phone

import (
	"errors"
	"slices"
	"testing"

	"github.com/nyaruka/phonenumbers"
)

// reference is Parse as the library alone would answer it, for E.164 input:
// phonenumbers.Parse, IsValidNumber and GetRegionCodeForNumber, and the
// number must format back to exactly the input (so the library did not
// read it differently, e.g. strip a trunk prefix) and have an ISO region.
func reference(raw string) (Number, bool) {
	n, err := phonenumbers.Parse(raw, "")
	if err != nil || !phonenumbers.IsValidNumber(n) {
		return Number{}, false
	}
	region := phonenumbers.GetRegionCodeForNumber(n)
	if phonenumbers.Format(n, phonenumbers.E164) != raw || !isAlpha2(region) {
		return Number{}, false
	}
	return Number{E164: raw, Region: region, CountryCode: int(n.GetCountryCode())}, true
}

// agree fails t if Parse and the library disagree on raw. Inputs that fail
// the form check are Parse's own business and must say so.
func agree(t *testing.T, raw string) (accepted bool) {
	t.Helper()
	got, err := Parse(raw)
	if checkForm(raw) != nil {
		if !errors.Is(err, ErrNotE164) {
			t.Errorf("Parse(%q) = %+v, %v; the form check refuses it", raw, got, err)
		}
		return false
	}
	want, ok := reference(raw)
	switch {
	case ok && err != nil:
		t.Errorf("Parse(%q) refuses a number the library accepts as %+v: %v", raw, want, err)
	case !ok && err == nil:
		t.Errorf("Parse(%q) accepts %+v, which the library refuses", raw, got)
	case ok && got != want:
		t.Errorf("Parse(%q) = %+v, the library says %+v", raw, got, want)
	case !ok && !errors.Is(err, ErrInvalidNumber):
		t.Errorf("Parse(%q) error %v is not ErrInvalidNumber", raw, err)
	}
	return ok
}

var numberTypes = []phonenumbers.PhoneNumberType{
	phonenumbers.FIXED_LINE, phonenumbers.MOBILE, phonenumbers.TOLL_FREE,
	phonenumbers.PREMIUM_RATE, phonenumbers.SHARED_COST, phonenumbers.VOIP,
	phonenumbers.PERSONAL_NUMBER, phonenumbers.PAGER, phonenumbers.UAN,
	phonenumbers.VOICEMAIL,
}

// exampleNumbers returns the metadata's example number of every region and
// number type, and of every non-geographic calling code, in E.164.
func exampleNumbers() []string {
	var out []string
	regions := make([]string, 0, 256)
	for r := range phonenumbers.GetSupportedRegions() {
		regions = append(regions, r)
	}
	slices.Sort(regions)
	for _, r := range regions {
		for _, typ := range numberTypes {
			if n := phonenumbers.GetExampleNumberForType(r, typ); n != nil {
				out = append(out, phonenumbers.Format(n, phonenumbers.E164))
			}
		}
	}
	for cc := range phonenumbers.GetSupportedGlobalNetworkCallingCodes() {
		if n := phonenumbers.GetExampleNumberForNonGeoEntity(cc); n != nil {
			out = append(out, phonenumbers.Format(n, phonenumbers.E164))
		}
	}
	return out
}

// mutations returns near misses of an E.164 number: one digit shorter or
// longer, each last digit, each first national digit, and a trunk "0"
// after the country code, which the library would strip.
func mutations(e164 string) []string {
	cc, n := countryCode(e164[1:])
	if cc == 0 {
		return nil
	}
	head, nsn := e164[:1+n], e164[1+n:]
	out := []string{e164[:len(e164)-1], e164 + "0", e164 + "7", head + "0" + nsn}
	for d := '0'; d <= '9'; d++ {
		out = append(out, e164[:len(e164)-1]+string(d))
		if nsn != "" {
			out = append(out, head+string(d)+nsn[1:])
		}
	}
	return out
}

// TestParseAgreesWithLibrary is the license for validate.go's shortcut: on
// thousands of valid and almost-valid numbers from every region, Parse and
// the library must give the same verdict and the same region.
func TestParseAgreesWithLibrary(t *testing.T) {
	accepted, refused := 0, 0
	for _, ex := range exampleNumbers() {
		for _, raw := range append([]string{ex}, mutations(ex)...) {
			if agree(t, raw) {
				accepted++
			} else {
				refused++
			}
		}
	}
	t.Logf("%d accepted, %d refused", accepted, refused)
	// Guard against a corpus that silently shrank to nothing.
	if accepted < 2000 || refused < 2000 {
		t.Errorf("corpus too small to mean anything: %d accepted, %d refused", accepted, refused)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"+4915112345678", "+12025550123", "+16135550123", "+447781123456", "+390612345678",
		"+80012345678", "+49015112345678", "+9991234567", "+49", "+", "", "+4915112345678901",
		"+77012345678", "+61491570006",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		agree(t, raw)
		// Random bytes rarely pass the form check, so also read them as
		// digits: that explores the numbering plans, not just the form.
		digits := []byte{'+'}
		for i := 0; i < len(raw) && len(digits) <= maxDigits; i++ {
			digits = append(digits, '0'+raw[i]%10)
		}
		agree(t, string(digits))
	})
}
