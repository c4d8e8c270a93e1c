package receipts

// SetBeforeLock installs f to run on every try of a settlement, after the
// messages are loaded and before their streams are locked: tests use it to
// line concurrent requests up, or to append behind the intake's back.
func SetBeforeLock(in *Intake, f func(try int)) { in.beforeLock = f }
