//! Topics on Kafka: create, list, describe, delete, with the settings the
//! embedded log has (partitions, compaction, retention by time and size).

use std::time::{Duration, Instant};

use rdkafka::admin::{
    AdminClient, AdminOptions, ConfigResourceResult, NewTopic, OwnedResourceSpecifier,
    ResourceSpecifier, TopicReplication,
};
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;

use super::{Connection, Ctx, Error, TIMEOUT, block_on, client_error};

/// A topic's settings, as `weir topic create` takes them and `describe`
/// shows them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicSettings {
    /// Number of partitions.
    pub partitions: u32,
    /// `cleanup.policy=compact`.
    pub compacted: bool,
    /// `retention.ms`; `None` keeps records for ever (-1).
    pub retention_ms: Option<i64>,
    /// `retention.bytes` (per partition); `None` for no limit (-1).
    pub retention_bytes: Option<u64>,
}

/// A topic with its settings and, when described, each partition's start
/// and end offsets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicInfo {
    /// Its name.
    pub name: String,
    /// Its settings.
    pub settings: TopicSettings,
    /// (start offset, end offset) per partition (empty from [`list`]).
    pub offsets: Vec<(i64, i64)>,
}

/// Kafka's own topics (`__consumer_offsets`, `__transaction_state`, ...),
/// which `list` leaves out as `kafka-topics --list` does.
pub fn is_internal(name: &str) -> bool {
    name.starts_with("__")
}

fn admin(conn: &Connection) -> Result<AdminClient<Ctx>, Error> {
    conn.config(&[])
        .create_with_context(Ctx::default())
        .map_err(client_error(format!(
            "cannot make a Kafka admin client for {}",
            conn.brokers
        )))
}

fn options() -> AdminOptions {
    AdminOptions::new().request_timeout(Some(TIMEOUT))
}

/// Creates a topic (replication factor: the cluster's default) and waits
/// until its partitions have leaders, so that a produce right after finds it.
pub fn create(conn: &Connection, name: &str, settings: &TopicSettings) -> Result<(), Error> {
    create_with(conn, name, settings, &[])
}

/// The topic configuration of a pipeline's internal (repartition) topics, as
/// Kafka Streams gives them: records stay until the pipeline purges them,
/// and segments roll at 50 MB or 10 minutes, so that a purge frees the disk
/// soon (a segment goes only once all of it is purged).
pub const INTERNAL_TOPIC: [(&str, &str); 3] = [
    ("retention.ms", "-1"),
    ("segment.bytes", "52428800"),
    ("segment.ms", "600000"),
];

/// [`create`], with more topic configuration (`extra`, after `settings`).
pub fn create_with(
    conn: &Connection,
    name: &str,
    settings: &TopicSettings,
    extra: &[(&str, &str)],
) -> Result<(), Error> {
    let consumer = conn.consumer(false)?;
    conn.probe(&consumer, None)?;
    let admin = admin(conn)?;
    let retention_ms = settings.retention_ms.unwrap_or(-1).to_string();
    let retention_bytes = settings
        .retention_bytes
        .map_or_else(|| "-1".to_string(), |b| b.to_string());
    let mut topic = NewTopic::new(
        name,
        settings.partitions as i32,
        TopicReplication::Fixed(-1),
    );
    if settings.compacted {
        topic = topic.set("cleanup.policy", "compact");
    }
    if settings.retention_ms.is_some() {
        topic = topic.set("retention.ms", &retention_ms);
    }
    if settings.retention_bytes.is_some() {
        topic = topic.set("retention.bytes", &retention_bytes);
    }
    for (k, v) in extra {
        topic = topic.set(k, v);
    }
    let what = format!("cannot create topic {name} on Kafka at {}", conn.brokers);
    let results =
        block_on(admin.create_topics([&topic], &options())).map_err(client_error(what.clone()))?;
    for r in results {
        if let Err((_, code)) = r {
            if code == RDKafkaErrorCode::TopicAlreadyExists {
                return Err(Error::TopicExists(name.to_string()));
            }
            return Err(Error::Client {
                what,
                error: KafkaError::AdminOp(code),
            });
        }
    }
    // The controller has it; wait until the brokers' metadata does too.
    let start = Instant::now();
    loop {
        let md = conn.probe(&consumer, Some(name))?;
        let ready = md.topics().iter().any(|t| {
            t.name() == name
                && t.error().is_none()
                && t.partitions().len() == settings.partitions as usize
                && t.partitions().iter().all(|p| p.leader() >= 0)
        });
        if ready {
            return Ok(());
        }
        if start.elapsed() > TIMEOUT {
            return Err(Error::Client {
                what: format!(
                    "topic {name} was created but its partitions have no leader after {} s",
                    TIMEOUT.as_secs()
                ),
                error: KafkaError::AdminOp(RDKafkaErrorCode::LeaderNotAvailable),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn settings_of(partitions: u32, config: Option<&ConfigResourceResult>) -> TopicSettings {
    let get = |name: &str| -> Option<String> {
        let resource = config?.as_ref().ok()?;
        resource.get(name)?.value.clone()
    };
    let positive = |v: Option<String>| v.and_then(|s| s.parse::<i64>().ok()).filter(|n| *n >= 0);
    TopicSettings {
        partitions,
        compacted: get("cleanup.policy").is_some_and(|p| p.split(',').any(|x| x == "compact")),
        retention_ms: positive(get("retention.ms")),
        retention_bytes: positive(get("retention.bytes")).map(|n| n as u64),
    }
}

/// The topics of the cluster (Kafka's internal ones left out), by name.
pub fn list(conn: &Connection) -> Result<Vec<TopicInfo>, Error> {
    let consumer = conn.consumer(false)?;
    let md = conn.probe(&consumer, None)?;
    let mut topics: Vec<(String, u32)> = md
        .topics()
        .iter()
        .filter(|t| !is_internal(t.name()) && t.error().is_none())
        .map(|t| (t.name().to_string(), t.partitions().len() as u32))
        .collect();
    topics.sort();
    if topics.is_empty() {
        return Ok(Vec::new());
    }
    let admin = admin(conn)?;
    let specs: Vec<ResourceSpecifier> = topics
        .iter()
        .map(|(n, _)| ResourceSpecifier::Topic(n))
        .collect();
    let configs =
        block_on(admin.describe_configs(&specs, &options())).map_err(client_error(format!(
            "cannot read the topics' settings on Kafka at {}",
            conn.brokers
        )))?;
    let config_of = |name: &str| {
        configs.iter().find(|c| {
            matches!(c, Ok(r) if r.specifier == OwnedResourceSpecifier::Topic(name.to_string()))
        })
    };
    Ok(topics
        .iter()
        .map(|(name, partitions)| TopicInfo {
            name: name.clone(),
            settings: settings_of(*partitions, config_of(name)),
            offsets: Vec::new(),
        })
        .collect())
}

/// One configuration value of a topic as the cluster has it (`segment.bytes`,
/// `retention.ms`, ...), if the topic has that entry.
pub fn topic_config(conn: &Connection, name: &str, key: &str) -> Result<Option<String>, Error> {
    Ok(configs_of(conn, name)?
        .first()
        .and_then(|c| c.as_ref().ok())
        .and_then(|r| r.get(key))
        .and_then(|e| e.value.clone()))
}

/// A topic's configuration as the cluster has it.
fn configs_of(conn: &Connection, name: &str) -> Result<Vec<ConfigResourceResult>, Error> {
    let admin = admin(conn)?;
    block_on(admin.describe_configs(&[ResourceSpecifier::Topic(name)], &options())).map_err(
        client_error(format!(
            "cannot read the settings of topic {name} on Kafka at {}",
            conn.brokers
        )),
    )
}

/// One topic: its settings and each partition's start offset and end offset
/// (the high watermark: the offset the next record will get).
pub fn describe(conn: &Connection, name: &str) -> Result<TopicInfo, Error> {
    let consumer = conn.consumer(false)?;
    let partitions = conn.partitions(&consumer, name)?;
    let configs = configs_of(conn, name)?;
    let mut offsets = Vec::with_capacity(partitions as usize);
    for p in 0..partitions {
        offsets.push(
            consumer
                .fetch_watermarks(name, p as i32, TIMEOUT)
                .map_err(client_error(format!(
                    "cannot read the offsets of partition {p} of topic {name}"
                )))?,
        );
    }
    Ok(TopicInfo {
        name: name.to_string(),
        settings: settings_of(partitions, configs.first()),
        offsets,
    })
}

/// Deletes a topic and its records.
pub fn delete(conn: &Connection, name: &str) -> Result<(), Error> {
    let consumer = conn.consumer(false)?;
    conn.partitions(&consumer, name)?;
    let admin = admin(conn)?;
    let what = format!("cannot delete topic {name} on Kafka at {}", conn.brokers);
    let results =
        block_on(admin.delete_topics(&[name], &options())).map_err(client_error(what.clone()))?;
    for r in results {
        if let Err((_, code)) = r {
            return Err(Error::Client {
                what,
                error: KafkaError::AdminOp(code),
            });
        }
    }
    Ok(())
}

/// Deletes the records before the given offsets (Kafka's DeleteRecords):
/// `(topic, partition, offset)`.
pub fn delete_records(conn: &Connection, before: &[(String, i32, i64)]) -> Result<(), Error> {
    let mut tpl = TopicPartitionList::new();
    for (topic, p, offset) in before {
        tpl.add_partition_offset(topic, *p, Offset::Offset(*offset))
            .map_err(client_error(format!(
                "cannot delete the records of {topic} partition {p} before {offset}"
            )))?;
    }
    let what = format!("cannot delete records on Kafka at {}", conn.brokers);
    let done = block_on(admin(conn)?.delete_records(&tpl, &options()))
        .map_err(client_error(what.clone()))?;
    for e in done.elements() {
        if let Err(error) = e.error() {
            return Err(Error::Client {
                what: format!("{what} ({} partition {})", e.topic(), e.partition()),
                error,
            });
        }
    }
    Ok(())
}

/// What [`reset_app`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reset {
    /// Whether the application's consumer group (its committed input
    /// positions) was there and is now deleted.
    pub group: bool,
    /// The internal topics deleted (repartition topics and changelogs).
    pub topics: Vec<String>,
}

/// Whether internal topic `topic` of `app` by its name (`APP-...-repartition`
/// or `-changelog`) is that of another application in `groups` whose name
/// is a longer prefix of it.
fn another_apps_topic(app: &str, topic: &str, groups: &[String]) -> bool {
    let body = topic
        .strip_suffix("-repartition")
        .or_else(|| topic.strip_suffix("-changelog"))
        .unwrap_or(topic);
    body.match_indices('-')
        .filter(|(at, _)| *at > app.len())
        .any(|(at, _)| groups.iter().any(|g| g == &body[..at]))
}

/// Resets application `app` on the cluster, as Kafka Streams' application
/// reset tool does: deletes its consumer group (so that its next run starts
/// from the earliest offsets) and its internal topics
/// (`APP-*-repartition`, `APP-*-changelog`). Refused while an instance
/// runs (its group has members).
pub fn reset_app(conn: &Connection, app: &str) -> Result<Reset, Error> {
    let admin = admin(conn)?;
    let what = format!(
        "cannot reset application {app} on Kafka at {}",
        conn.brokers
    );
    let mut done = Reset::default();
    let groups =
        block_on(admin.delete_groups(&[app], &options())).map_err(client_error(what.clone()))?;
    for g in groups {
        match g {
            Ok(_) => done.group = true,
            Err((_, RDKafkaErrorCode::GroupIdNotFound)) => {}
            Err((_, RDKafkaErrorCode::NonEmptyGroup)) => {
                return Err(Error::Running(app.to_string()));
            }
            Err((_, code)) => {
                return Err(Error::Client {
                    what,
                    error: KafkaError::AdminOp(code),
                });
            }
        }
    }
    let prefix = format!("{app}-");
    done.topics = list(conn)?
        .into_iter()
        .map(|t| t.name)
        .filter(|n| {
            n.starts_with(&prefix) && (n.ends_with("-repartition") || n.ends_with("-changelog"))
        })
        .collect();
    if !done.topics.is_empty() {
        // Not those of another application whose name starts with `APP-`
        // (`wc-2-count-repartition` of `wc-2` for `wc`): one with a group.
        let consumer = conn.consumer(false)?;
        let groups: Vec<String> = consumer
            .fetch_group_list(None, TIMEOUT)
            .map_err(client_error(what.clone()))?
            .groups()
            .iter()
            .map(|g| g.name().to_string())
            .collect();
        done.topics.retain(|t| !another_apps_topic(app, t, &groups));
    }
    if !done.topics.is_empty() {
        let names: Vec<&str> = done.topics.iter().map(String::as_str).collect();
        let results = block_on(admin.delete_topics(&names, &options()))
            .map_err(client_error(what.clone()))?;
        for r in results {
            if let Err((_, code)) = r {
                return Err(Error::Client {
                    what,
                    error: KafkaError::AdminOp(code),
                });
            }
        }
    }
    Ok(done)
}
