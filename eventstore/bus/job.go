package bus

import "strconv"

// Job is the body of a message on the dispatch work queue: one attempt of
// one message. The scheduler publishes it, the dispatch workers and the
// dead-letter handler read it; its JSON is the wire format between them.
type Job struct {
	MessageID string `json:"message_id"`
	Attempt   int    `json:"attempt"`
	AccountID string `json:"account_id"`
}

// MsgID is the job's JetStream deduplication id: a re-publish of the same
// attempt within the duplicate window is dropped by the stream.
func (j Job) MsgID() string { return j.MessageID + ":" + strconv.Itoa(j.Attempt) }
