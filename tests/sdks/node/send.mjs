// Sends Segment calls to a running Tenure through @segment/analytics-node,
// unchanged: its own batching, retries and transport (fetch). Driven by
// tests/integration/test_segment_sdks.py:
//
//   TENURE_URL=http://127.0.0.1:PORT TENURE_WRITE_KEY=... node send.mjs SCENARIO PREFIX
//
// analytics-node builds its URL as `new URL(path, host)`, so a host's own path
// is replaced by `path`: the host is Tenure's origin and `path` its batch
// endpoint, /api/v1/batch. Prints one JSON line on stdout, what the SDK saw:
// {"responses": [HTTP statuses], "errors": [reasons]}; exits 1 when the SDK
// reported any error (a delivery failure or a dropped event), 2 on bad usage.
import { Analytics } from '@segment/analytics-node'

const [scenarioName, prefix] = process.argv.slice(2)
const { TENURE_URL: host, TENURE_WRITE_KEY: writeKey } = process.env
// The context a web app's backend forwards (a new object each time).
const browser = () => ({
  locale: 'en-GB',
  timezone: 'Europe/London',
  userAgent: 'Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0',
  ip: '203.0.113.9',
})

const scenarios = {
  // A visitor browses, signs up, is grouped into an account; an earlier user
  // id is aliased to the new one and a second device's visitor is identified.
  async journey(analytics, p) {
    const user = `${p}-user`
    const anon = `${p}-anon`
    analytics.page({
      anonymousId: anon,
      category: 'Marketing',
      name: 'Pricing',
      properties: { url: 'https://shop.example.com/pricing?ref=ad', title: 'Pricing' },
      context: browser(),
    })
    analytics.track({
      anonymousId: anon, event: 'Plan Viewed', properties: { plan: 'pro' }, context: browser(),
    })
    await analytics.flush()
    analytics.identify({
      userId: user,
      anonymousId: anon,
      traits: { email: `${p}@example.com`, name: 'Ada Lovelace', plan: 'pro' },
      context: browser(),
    })
    analytics.track({ userId: user, event: 'Subscribed', properties: { plan: 'pro', mrr: 49 } })
    analytics.screen({ userId: user, name: 'Settings', properties: { section: 'billing' } })
    analytics.group({
      userId: user, groupId: `${p}-acme`, traits: { name: 'Acme Ltd', plan: 'enterprise', seats: 40 },
    })
    await analytics.flush()
    analytics.track({ userId: `${p}-legacy`, event: 'Legacy Login' })
    await analytics.flush()
    analytics.alias({ previousId: `${p}-legacy`, userId: user })
    analytics.track({ anonymousId: `${p}-anon2`, event: 'App Opened', context: browser() })
    await analytics.flush()
    analytics.identify({ userId: user, anonymousId: `${p}-anon2` })
  },
  // One call over Segment's 32 KiB limit per call.
  async oversize(analytics, p) {
    analytics.track({ userId: `${p}-user`, event: 'Huge', properties: { blob: 'x'.repeat(40000) } })
  },
  // A batch with one item Tenure refuses (an empty event name) between two good ones.
  async malformed(analytics, p) {
    analytics.identify({ userId: `${p}-user`, traits: { plan: 'pro' } })
    analytics.track({ userId: `${p}-user`, event: '' })
    analytics.track({ userId: `${p}-user`, event: 'Good Event' })
  },
}

const scenario = scenarios[scenarioName]
if (!scenario || !prefix || !host || !writeKey) {
  console.error('usage: TENURE_URL=... TENURE_WRITE_KEY=... node send.mjs ' +
    `${Object.keys(scenarios).join('|')} PREFIX`)
  process.exit(2)
}

// As shipped (retries included), but for where to send and a flush interval
// of 0.5 s instead of 10 s; the scenarios flush between steps anyway.
const analytics = new Analytics({ writeKey, host, path: '/api/v1/batch', flushInterval: 500 })
const seen = { responses: [], errors: [] }
analytics.on('http_response', (response) => seen.responses.push(response.status))
analytics.on('error', (error) => seen.errors.push(String(error.reason?.message ?? error.reason)))

try {
  await scenario(analytics, prefix)
  await analytics.closeAndFlush({ timeout: 60000 })
} catch (error) {
  seen.errors.push(String(error?.message ?? error))
}
console.log(JSON.stringify(seen))
process.exit(seen.errors.length ? 1 : 0)
