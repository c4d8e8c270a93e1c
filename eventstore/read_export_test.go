package eventstore

// TailAccountSQL is the tenant's tail query, for the plan test.
const TailAccountSQL = tailAccountSQL
