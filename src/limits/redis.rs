//! Counters in Redis, shared by every instance. Each admission and release is one Lua
//! script, so it is atomic; every call has a tight timeout, and the connection manager
//! reconnects on its own after Redis comes back.

use std::time::Duration;

use futures_util::future::BoxFuture;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Script};

use super::counters::{Check, CounterError, Counters, RateState, Release, Verdict};

const ADMIT: &str = r#"
local now = tonumber(ARGV[1])
local a, k, index = 2, 1, 0
local pending, out = {}, {}
while a <= #ARGV do
  index = index + 1
  local kind = ARGV[a]
  if kind == 'r' then
    local key, per_minute, cost = KEYS[k], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
    k, a = k + 1, a + 3
    local interval = 60000 / math.max(per_minute, 1)
    local tat = tonumber(redis.call('GET', key) or '0')
    if tat < now then tat = now end
    local new_tat = tat + math.min(cost, per_minute) * interval
    local ahead = new_tat - now
    if ahead > 60000 then return {'refused', tostring(index), tostring(math.ceil(ahead - 60000))} end
    table.insert(pending, {'r', key, new_tat})
    table.insert(out, tostring(math.floor((60000 - ahead) / interval)))
    table.insert(out, tostring(math.ceil(ahead)))
  elseif kind == 'c' then
    local key, max = KEYS[k], tonumber(ARGV[a + 1])
    k, a = k + 1, a + 2
    if tonumber(redis.call('GET', key) or '0') >= max then return {'refused', tostring(index), '1000'} end
    table.insert(pending, {'c', key})
    table.insert(out, '-')
    table.insert(out, '-')
  else
    local n, limit, amount, ttl = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), ARGV[a + 4]
    a = a + 5
    local used = 0
    for i = 0, n - 1 do
      local values = redis.call('HMGET', KEYS[k + i], 'spent', 'reserved')
      used = used + tonumber(values[1] or '0') + tonumber(values[2] or '0')
    end
    if used + amount > limit then return {'refused', tostring(index), '-'} end
    table.insert(pending, {'b', KEYS[k], ARGV[a - 2], ttl})
    k = k + n
    table.insert(out, '-')
    table.insert(out, '-')
  end
end
for _, p in ipairs(pending) do
  if p[1] == 'r' then
    redis.call('SET', p[2], string.format('%.3f', p[3]), 'PX', 120000)
  elseif p[1] == 'c' then
    redis.call('INCR', p[2])
    redis.call('EXPIRE', p[2], 900)
  else
    redis.call('HINCRBYFLOAT', p[2], 'reserved', p[3])
    redis.call('EXPIRE', p[2], p[4])
  end
end
table.insert(out, 1, 'ok')
return out
"#;

const RELEASE: &str = r#"
local now = tonumber(ARGV[1])
local a, k = 2, 1
while a <= #ARGV do
  local kind, key = ARGV[a], KEYS[k]
  k = k + 1
  if kind == 'c' then
    a = a + 1
    if tonumber(redis.call('GET', key) or '0') > 0 then redis.call('DECR', key) end
  elseif kind == 'b' then
    redis.call('HINCRBYFLOAT', key, 'reserved', '-' .. ARGV[a + 1])
    redis.call('HINCRBYFLOAT', key, 'spent', ARGV[a + 2])
    redis.call('EXPIRE', key, ARGV[a + 3])
    a = a + 4
  else
    local per_minute, delta = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
    a = a + 3
    local tat = redis.call('GET', key)
    if tat then
      local moved = math.max(tonumber(tat) + delta * 60000 / math.max(per_minute, 1), now - 60000)
      redis.call('SET', key, string.format('%.3f', moved), 'PX', 120000)
    end
  end
end
return 1
"#;

const SEED: &str = r#"
if redis.call('HSETNX', KEYS[1], 'spent', ARGV[1]) == 1 then
  redis.call('HSETNX', KEYS[1], 'reserved', '0')
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return 1
"#;

const USED: &str = r#"
local used = 0
for i = 1, #KEYS do
  local values = redis.call('HMGET', KEYS[i], 'spent', 'reserved')
  used = used + tonumber(values[1] or '0') + tonumber(values[2] or '0')
end
return tostring(used)
"#;

const MISSING: &str = r#"
local missing = {}
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then table.insert(missing, KEYS[i]) end
end
return missing
"#;

pub struct RedisCounters {
    connection: ConnectionManager,
    timeout: Duration,
    prefix: String,
    admit: Script,
    release: Script,
    seed: Script,
    used: Script,
    missing: Script,
}

impl RedisCounters {
    /// Connects lazily: the gateway starts even while Redis is down.
    pub fn new(url: &str, timeout: Duration, prefix: &str) -> Result<RedisCounters, CounterError> {
        let client = Client::open(url).map_err(|e| CounterError(format!("invalid redis_url: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(2));
        let connection =
            ConnectionManager::new_lazy_with_config(client, config).map_err(|e| CounterError(format!("redis: {e}")))?;
        Ok(RedisCounters {
            connection,
            timeout,
            prefix: prefix.to_owned(),
            admit: Script::new(ADMIT),
            release: Script::new(RELEASE),
            seed: Script::new(SEED),
            used: Script::new(USED),
            missing: Script::new(MISSING),
        })
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    async fn run<T: redis::FromRedisValue>(&self, invocation: redis::ScriptInvocation<'_>) -> Result<T, CounterError> {
        let mut connection = self.connection.clone();
        match tokio::time::timeout(self.timeout, invocation.invoke_async(&mut connection)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(CounterError(error.to_string())),
            Err(_) => Err(CounterError(format!("no answer within {} ms", self.timeout.as_millis()))),
        }
    }
}

impl Counters for RedisCounters {
    fn admit<'a>(&'a self, checks: &'a [Check], now_ms: u64) -> BoxFuture<'a, Result<Verdict, CounterError>> {
        Box::pin(async move {
            let mut invocation = self.admit.prepare_invoke();
            invocation.arg(now_ms);
            for check in checks {
                match check {
                    Check::Rate { key, per_minute, cost } => {
                        invocation.key(self.key(key)).arg("r").arg(*per_minute).arg(*cost);
                    }
                    Check::Concurrency { key, max } => {
                        invocation.key(self.key(key)).arg("c").arg(*max);
                    }
                    Check::Budget { buckets, limit, amount, ttl_secs } => {
                        for bucket in buckets {
                            invocation.key(self.key(bucket));
                        }
                        invocation
                            .arg("b")
                            .arg(buckets.len())
                            .arg(limit.to_string())
                            .arg(amount.to_string())
                            .arg(*ttl_secs);
                    }
                }
            }
            let reply: Vec<String> = self.run(invocation).await?;
            parse_verdict(&reply)
        })
    }

    fn release<'a>(&'a self, releases: &'a [Release], now_ms: u64) -> BoxFuture<'a, Result<(), CounterError>> {
        Box::pin(async move {
            let mut invocation = self.release.prepare_invoke();
            invocation.arg(now_ms);
            for release in releases {
                match release {
                    Release::Concurrency { key } => {
                        invocation.key(self.key(key)).arg("c");
                    }
                    Release::Budget { bucket, reserved, actual, ttl_secs } => {
                        invocation
                            .key(self.key(bucket))
                            .arg("b")
                            .arg(reserved.to_string())
                            .arg(actual.to_string())
                            .arg(*ttl_secs);
                    }
                    Release::Rate { key, per_minute, delta } => {
                        invocation.key(self.key(key)).arg("r").arg(*per_minute).arg(*delta);
                    }
                }
            }
            let _: i64 = self.run(invocation).await?;
            Ok(())
        })
    }

    fn missing<'a>(&'a self, buckets: &'a [String]) -> BoxFuture<'a, Result<Vec<String>, CounterError>> {
        Box::pin(async move {
            let mut invocation = self.missing.prepare_invoke();
            for bucket in buckets {
                invocation.key(self.key(bucket));
            }
            let missing: Vec<String> = self.run(invocation).await?;
            Ok(missing.into_iter().map(|key| key.trim_start_matches(&self.prefix).to_owned()).collect())
        })
    }

    fn seed<'a>(&'a self, bucket: &'a str, spent: f64, ttl_secs: u64) -> BoxFuture<'a, Result<(), CounterError>> {
        Box::pin(async move {
            let mut invocation = self.seed.prepare_invoke();
            invocation.key(self.key(bucket)).arg(spent.to_string()).arg(ttl_secs);
            let _: i64 = self.run(invocation).await?;
            Ok(())
        })
    }

    fn used<'a>(&'a self, buckets: &'a [String]) -> BoxFuture<'a, Result<f64, CounterError>> {
        Box::pin(async move {
            let mut invocation = self.used.prepare_invoke();
            for bucket in buckets {
                invocation.key(self.key(bucket));
            }
            let used: String = self.run(invocation).await?;
            used.parse().map_err(|_| CounterError(format!("unexpected reply {used:?}")))
        })
    }
}

fn parse_verdict(reply: &[String]) -> Result<Verdict, CounterError> {
    let number = |text: &str| text.parse::<u64>().ok();
    match reply.first().map(String::as_str) {
        Some("ok") => Ok(Verdict::Admitted(
            reply[1..]
                .chunks(2)
                .map(|pair| match pair {
                    [remaining, reset] => Some(RateState { remaining: number(remaining)?, reset_ms: number(reset)? }),
                    _ => None,
                })
                .collect(),
        )),
        Some("refused") => {
            let index = reply.get(1).and_then(|i| number(i)).unwrap_or(1).saturating_sub(1) as usize;
            Ok(Verdict::Refused { index, retry_after_ms: reply.get(2).and_then(|r| number(r)) })
        }
        _ => Err(CounterError(format!("unexpected reply {reply:?}"))),
    }
}
