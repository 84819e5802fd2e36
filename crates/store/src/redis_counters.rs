//! Rate-limit buckets in Redis: the other shared engine decision 0015 weighed against
//! PostgreSQL. A draw is one Lua script, which Redis runs atomically, so replicas sharing a
//! Redis never admit more than the limit between them, in one round trip and without row
//! locks. Each bucket is a hash (`level`, `at`) that expires once it would be full again.
//!
//! Levels cross the script boundary as strings: Redis turns Lua numbers into integers.

use redis::aio::MultiplexedConnection;
use redis::Script;

use crate::counters::{Counters, Draw, Drawn};
use crate::StoreError;

/// KEYS: the buckets. ARGV: now, then capacity, per_sec, cost per bucket. Refills every
/// bucket to `now`; when each holds its cost, takes the costs. Returns `admitted` (1/0)
/// and each level before the costs, as strings.
const DRAW: &str = r#"
local now = tonumber(ARGV[1])
local levels = {}
local admitted = 1
for i, key in ipairs(KEYS) do
  local cap = tonumber(ARGV[2 + (i - 1) * 3])
  local per = tonumber(ARGV[3 + (i - 1) * 3])
  local cost = tonumber(ARGV[4 + (i - 1) * 3])
  local v = redis.call('HMGET', key, 'level', 'at')
  local level = cap
  if v[1] then
    level = math.min(cap, tonumber(v[1]) + math.max(0, now - tonumber(v[2])) * per)
  end
  levels[i] = level
  if cost > level then admitted = 0 end
end
local out = {tostring(admitted)}
for i, key in ipairs(KEYS) do
  out[i + 1] = tostring(levels[i])
  if admitted == 1 then
    local cap = tonumber(ARGV[2 + (i - 1) * 3])
    local per = tonumber(ARGV[3 + (i - 1) * 3])
    local left = levels[i] - tonumber(ARGV[4 + (i - 1) * 3])
    redis.call('HSET', key, 'level', tostring(left), 'at', tostring(now))
    redis.call('EXPIRE', key, math.ceil((cap - left) / per) + 1)
  end
end
return out
"#;

/// KEYS[1]: the bucket. ARGV: now, capacity, per_sec, amount. Returns the new level.
const CREDIT: &str = r#"
local now, cap, per, amount = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local v = redis.call('HMGET', KEYS[1], 'level', 'at')
local level = cap
if v[1] then
  level = math.min(cap, tonumber(v[1]) + math.max(0, now - tonumber(v[2])) * per)
end
level = math.min(cap, level + amount)
redis.call('HSET', KEYS[1], 'level', tostring(level), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(math.max(0, cap - level) / per) + 1)
return tostring(level)
"#;

/// Buckets in a Redis server, shared by every replica that uses it.
pub struct RedisCounters {
    conn: MultiplexedConnection,
    draw: Script,
    credit: Script,
    prefix: String,
}

fn redis_err(e: redis::RedisError) -> StoreError {
    StoreError::Counters(format!("redis: {e}"))
}

fn number(s: &str) -> Result<f64, StoreError> {
    s.parse()
        .map_err(|_| StoreError::Counters(format!("redis: not a bucket level: {s:?}")))
}

impl RedisCounters {
    /// Connects to `url` (`redis://host:port/db`). Keys are `peregrine:rl:<bucket>`.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(redis_err)?;
        let conn = (client.get_multiplexed_async_connection())
            .await
            .map_err(redis_err)?;
        Ok(Self {
            conn,
            draw: Script::new(DRAW),
            credit: Script::new(CREDIT),
            prefix: "peregrine:rl:".into(),
        })
    }
}

#[async_trait::async_trait]
impl Counters for RedisCounters {
    async fn draw(&self, draws: &[Draw], now: f64) -> Result<Drawn, StoreError> {
        let mut call = self.draw.prepare_invoke();
        call.arg(now);
        for d in draws {
            call.key(format!("{}{}", self.prefix, d.key));
            call.arg(d.capacity).arg(d.per_sec).arg(d.cost);
        }
        let mut conn = self.conn.clone();
        let out: Vec<String> = call.invoke_async(&mut conn).await.map_err(redis_err)?;
        let (admitted, levels) = out
            .split_first()
            .ok_or_else(|| StoreError::Counters("redis: empty draw reply".into()))?;
        Ok(Drawn {
            admitted: admitted == "1",
            levels: levels.iter().map(|l| number(l)).collect::<Result<_, _>>()?,
        })
    }

    async fn credit(&self, d: &Draw, amount: f64, now: f64) -> Result<f64, StoreError> {
        let mut conn = self.conn.clone();
        let level: String = (self.credit.key(format!("{}{}", self.prefix, d.key)))
            .arg(now)
            .arg(d.capacity)
            .arg(d.per_sec)
            .arg(amount)
            .invoke_async(&mut conn)
            .await
            .map_err(redis_err)?;
        number(&level)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against a real Redis when `PEREGRINE_TEST_REDIS` names one (the test command starts
    /// Debian's redis-server); skipped otherwise.
    #[tokio::test]
    async fn redis_counters_behave() {
        let Ok(url) = std::env::var("PEREGRINE_TEST_REDIS") else {
            eprintln!("PEREGRINE_TEST_REDIS not set: skipped");
            return;
        };
        let c = RedisCounters::connect(&url).await.unwrap();
        crate::counters::suite::all(&c, &format!("test:{}:", ulid::Ulid::new())).await;
    }
}
