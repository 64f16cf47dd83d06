// Sends messages with the official Segment and RudderStack Node SDKs, configured only with a host and a write
// key, exactly as a brand's server would. Env: KIZUNA_BASE, KIZUNA_WRITE_KEY.
const { Analytics } = require('@segment/analytics-node');
const RudderAnalytics = require('@rudderstack/rudder-sdk-node');

const base = process.env.KIZUNA_BASE;
const writeKey = process.env.KIZUNA_WRITE_KEY;

async function segment() {
  const errors = [];
  const analytics = new Analytics({ writeKey, host: base, flushInterval: 50, maxRetries: 0 });
  analytics.on('error', (e) => errors.push(e));
  analytics.identify({ userId: 'segment-node-user', anonymousId: 'segment-node-anon', traits: { email: 'Segment.Node@Example.com', plan: 'vip' } });
  analytics.page({ anonymousId: 'segment-node-anon', name: 'Home', properties: { path: '/' } });
  analytics.track({ userId: 'segment-node-user', event: 'Order Completed', properties: { order_id: 'sn-1', total: 42.5, currency: 'USD' } });
  analytics.screen({ userId: 'segment-node-user', name: 'Cart' });
  analytics.group({ userId: 'segment-node-user', groupId: 'g-1', traits: { name: 'Team' } });
  analytics.alias({ userId: 'segment-node-user', previousId: 'segment-node-old' });
  await analytics.closeAndFlush({ timeout: 10000 });
  if (errors.length) throw new Error('segment sdk: ' + JSON.stringify(errors));
}

async function rudder() {
  const client = new RudderAnalytics(writeKey, { dataPlaneUrl: base, flushAt: 2, flushInterval: 50, retryCount: 0 });
  client.identify({ userId: 'rudder-node-user', traits: { email: 'rudder.node@example.com' } });
  client.track({ userId: 'rudder-node-user', event: 'Product Viewed', properties: { product_id: 'p-7', category: 'Shoes' } });
  client.page({ userId: 'rudder-node-user', name: 'Product' });
  await new Promise((resolve, reject) => client.flush((err) => (err ? reject(err) : resolve())));
}

(async () => {
  await segment();
  await rudder();
  console.log('sdk messages sent');
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
