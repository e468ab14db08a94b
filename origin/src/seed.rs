//! `aside-origin seed`: realistic Portuguese profiles, generated and loaded with a binary `COPY`.
//!
//! * [`ProfileGenerator`] is pure and seedable: the same seed and the same "today" give the same rows.
//!   Names come from the `fake` crate's pt_PT lists; the gender is drawn first and the first name is drawn
//!   from the pt_PT first names of that gender (see [`first_name_gender`] for the rule). Usernames
//!   (`first.last`, accents removed, lower case) and e-mails (`username@fake-devops-db.internal`) are unique
//!   over the whole run: the n-th profile (n >= 2) that shares a first and last name gets `.n` appended
//!   (`erica.teixeira`, `erica.teixeira.2`, ...), counted per (first, last) pair in a flat table, no set
//!   of strings.
//! * [`seed`] loads the rows into `devops_api.users` in one transaction: a producer on a blocking thread
//!   generates batches into a bounded channel, the async side streams them through
//!   `BinaryCopyInWriter`, so generation and `COPY` overlap.

use std::pin::pin;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use aside_shared::{BirthDate, Department, Email, FullName, Gender, ProfileInput, Username};
use fake::locales::{Data, PT_PT};
use indicatif::{ProgressBar, ProgressStyle};
use rand::{RngExt as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;
use time::Date;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

/// The domain of every seeded e-mail address.
pub const EMAIL_DOMAIN: &str = "fake-devops-db.internal";

/// The default number of rows when no `--count` is given is drawn from this range.
pub const DEFAULT_COUNT_RANGE: std::ops::RangeInclusive<u64> = 300..=500;

/// Seeded profiles are this old (in whole years) on the generator's "today".
pub const AGE_RANGE: std::ops::RangeInclusive<i32> = 18..=65;

/// The share of profiles with two surnames (`Ana Sousa Teixeira`); the others have one (`Ana Teixeira`).
const TWO_SURNAMES_PROBABILITY: f64 = 0.6;

/// Rows per batch handed from the generator thread to the `COPY` stream.
const BATCH_ROWS: usize = 8192;
/// Batches buffered between the generator and the `COPY` stream.
const CHANNEL_BATCHES: usize = 4;

const COPY_STATEMENT: &str = "COPY devops_api.users (full_name, gender, birth_date, department, email, username) \
     FROM STDIN (FORMAT binary)";

/// pt_PT first names that do not end in `a` but are female.
const FEMALE_NOT_ENDING_IN_A: &[&str] = &[
    "Alice", "Beatriz", "Inês", "Isabel", "Íris", "Leonor", "Matilde", "Nicole", "Raquel",
];

/// pt_PT first names that end in `a` but are male (none in fake 5.1's list today; kept so a future list
/// with e.g. `Luca` has an obvious place to go).
const MALE_ENDING_IN_A: &[&str] = &["Luca"];

/// The gender of a Portuguese first name: names ending in `a` (accents ignored) are female, every other
/// name is male, except the explicit lists [`FEMALE_NOT_ENDING_IN_A`] and [`MALE_ENDING_IN_A`].
pub fn first_name_gender(name: &str) -> Gender {
    if FEMALE_NOT_ENDING_IN_A.contains(&name) {
        return Gender::Female;
    }
    if MALE_ENDING_IN_A.contains(&name) {
        return Gender::Male;
    }
    if fold_to_ascii(name).ends_with('a') {
        Gender::Female
    } else {
        Gender::Male
    }
}

/// Accents removed (`deunicode`), lower case, and only `a`-`z` kept: `Conceição` -> `conceicao`.
pub fn fold_to_ascii(name: &str) -> String {
    deunicode::deunicode(name)
        .chars()
        .filter(char::is_ascii_alphabetic)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// What [`seed`] is asked to do.
#[derive(Debug, Clone, Default)]
pub struct SeedOptions {
    /// Rows to insert; `None`: a random count in [`DEFAULT_COUNT_RANGE`] (derived from `seed` if given).
    pub count: Option<u64>,
    /// Makes the rows (and the default count) reproducible; `None`: a random seed.
    pub seed: Option<u64>,
    /// Empty the table (`TRUNCATE ... RESTART IDENTITY`) first, in the same transaction.
    pub replace: bool,
    /// Show an indicatif progress bar on stderr.
    pub progress: bool,
}

/// What [`seed`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedReport {
    /// Rows inserted (0 when skipped).
    pub inserted: u64,
    /// `Some(n)`: the table already held `n` rows and `replace` was not asked, so nothing was done.
    pub skipped_existing: Option<u64>,
    pub elapsed: Duration,
}

/// A name as shown (`Conceição`) and as used in usernames (`conceicao`).
#[derive(Debug, Clone)]
struct Name {
    display: &'static str,
    folded: String,
}

/// The pt_PT names, deduplicated by folded form (fake's list has `Ramos` twice) so that one index is one
/// username base.
fn name_table(names: &'static [&'static str]) -> Vec<Name> {
    let mut table: Vec<Name> = Vec::with_capacity(names.len());
    for &display in names {
        let folded = fold_to_ascii(display);
        assert!(
            !folded.is_empty(),
            "pt_PT name {display:?} folds to nothing"
        );
        if !table.iter().any(|n| n.folded == folded) {
            table.push(Name { display, folded });
        }
    }
    table
}

/// `today` minus `years`, with 29 February becoming 28 February in a common year.
fn years_before(today: Date, years: i32) -> Date {
    let year = today.year() - years;
    today
        .replace_year(year)
        .or_else(|_| Date::from_calendar_date(year, today.month(), today.day() - 1))
        .expect("a day before 29 February exists in every year")
}

/// A pure, seedable stream of distinct profiles. `Iterator` never ends; take what you need.
pub struct ProfileGenerator {
    rng: ChaCha8Rng,
    first_names: Vec<Name>,
    /// Indices into `first_names` by gender.
    male_first: Vec<usize>,
    female_first: Vec<usize>,
    last_names: Vec<Name>,
    /// How many times each (first, last) username base was handed out: `first * last_names.len() + last`.
    base_uses: Vec<u32>,
    departments: Vec<Department>,
    /// Julian day of the earliest birth date and the number of days in the range.
    earliest_birth: i32,
    birth_days: i32,
}

impl ProfileGenerator {
    /// A generator whose output depends only on `seed` and `today` (which fixes the birth-date range:
    /// everyone is 18 to 65 years old on that day).
    pub fn new(seed: u64, today: Date) -> Self {
        let first_names = name_table(PT_PT::NAME_FIRST_NAME);
        let last_names = name_table(PT_PT::NAME_LAST_NAME);
        let (female_first, male_first): (Vec<usize>, Vec<usize>) = (0..first_names.len())
            .partition(|&i| first_name_gender(first_names[i].display) == Gender::Female);
        assert!(
            !female_first.is_empty() && !male_first.is_empty() && last_names.len() >= 2,
            "the pt_PT locale lacks names"
        );
        let departments = Department::SEEDED
            .iter()
            .map(|d| Department::parse(d).expect("the seeded departments are valid"))
            .collect();
        // Ages 18..=65 on `today`: born after today-66y and on or before today-18y.
        let latest = years_before(today, *AGE_RANGE.start());
        let earliest = years_before(today, *AGE_RANGE.end() + 1)
            .next_day()
            .expect("within time's date range");
        let earliest_birth = earliest.to_julian_day();
        let birth_days = latest.to_julian_day() - earliest_birth + 1;
        let base_uses = vec![0; first_names.len() * last_names.len()];
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
            first_names,
            male_first,
            female_first,
            last_names,
            base_uses,
            departments,
            earliest_birth,
            birth_days,
        }
    }

    /// The next profile; unique username and e-mail among everything this generator produced.
    pub fn next_profile(&mut self) -> ProfileInput {
        let gender = if self.rng.random_bool(0.5) {
            Gender::Female
        } else {
            Gender::Male
        };
        let pool = match gender {
            Gender::Female => &self.female_first,
            Gender::Male => &self.male_first,
        };
        let first = pool[self.rng.random_range(0..pool.len())];
        let last_count = self.last_names.len();
        let last = self.rng.random_range(0..last_count);
        let middle = if self.rng.random_bool(TWO_SURNAMES_PROBABILITY) {
            // A different surname: draw among the others.
            let m = self.rng.random_range(0..last_count - 1);
            Some(if m >= last { m + 1 } else { m })
        } else {
            None
        };
        let birth =
            Date::from_julian_day(self.earliest_birth + self.rng.random_range(0..self.birth_days))
                .expect("within time's date range");
        let department = self.departments[self.rng.random_range(0..self.departments.len())].clone();

        let first_name = &self.first_names[first];
        let last_name = &self.last_names[last];
        let full_name = match middle {
            Some(m) => format!(
                "{} {} {}",
                first_name.display, self.last_names[m].display, last_name.display
            ),
            None => format!("{} {}", first_name.display, last_name.display),
        };

        let uses = &mut self.base_uses[first * last_count + last];
        *uses += 1;
        let username = if *uses == 1 {
            format!("{}.{}", first_name.folded, last_name.folded)
        } else {
            format!("{}.{}.{}", first_name.folded, last_name.folded, uses)
        };
        let email = format!("{username}@{EMAIL_DOMAIN}");

        ProfileInput {
            full_name: FullName::parse(&full_name).expect("generated full name is valid"),
            gender,
            birth_date: BirthDate::from_date(birth).expect("generated birth date is valid"),
            department,
            email: Email::parse(&email).expect("generated e-mail is valid"),
            username: Username::parse(&username).expect("generated username is valid"),
        }
    }
}

impl Iterator for ProfileGenerator {
    type Item = ProfileInput;

    fn next(&mut self) -> Option<ProfileInput> {
        Some(self.next_profile())
    }
}

/// The default count for a seed: its own ChaCha stream, so it does not shift the rows.
fn default_count(seed: u64) -> u64 {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(1);
    rng.random_range(DEFAULT_COUNT_RANGE)
}

fn progress_bar(progress: bool, count: u64) -> ProgressBar {
    if !progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(count);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} rows ({rate}, ETA {eta})",
        )
        .expect("valid progress template")
        .with_key(
            "rate",
            |state: &indicatif::ProgressState, out: &mut dyn std::fmt::Write| {
                let _ = write!(out, "{} rows/s", indicatif::HumanCount(state.per_sec() as u64));
            },
        ),
    );
    bar
}

/// Generates and loads profiles into `devops_api.users` in one transaction (see [`SeedOptions`]).
///
/// The table is locked against other writers (`SHARE ROW EXCLUSIVE`, readers still read) before it is
/// counted, so a concurrent writer cannot slip in a row between the check and the `COPY`.
pub async fn seed(
    client: &mut tokio_postgres::Client,
    options: &SeedOptions,
) -> anyhow::Result<SeedReport> {
    let started = Instant::now();
    let seed = options.seed.unwrap_or_else(|| rand::rng().random());
    let count = options.count.unwrap_or_else(|| default_count(seed));
    let today = time::OffsetDateTime::now_utc().date();
    tracing::info!(
        seed,
        count,
        replace = options.replace,
        "seeding devops_api.users"
    );

    let tx = client
        .transaction()
        .await
        .context("beginning the seed transaction")?;
    if options.replace {
        tx.batch_execute("TRUNCATE devops_api.users RESTART IDENTITY")
            .await
            .context("emptying devops_api.users")?;
    } else {
        tx.batch_execute("LOCK TABLE devops_api.users IN SHARE ROW EXCLUSIVE MODE")
            .await
            .context("locking devops_api.users")?;
        let existing: i64 = tx
            .query_one("SELECT count(*) FROM devops_api.users", &[])
            .await
            .context("counting devops_api.users")?
            .get(0);
        if existing > 0 {
            tx.rollback().await.context("ending the seed transaction")?;
            return Ok(SeedReport {
                inserted: 0,
                skipped_existing: Some(existing.unsigned_abs()),
                elapsed: started.elapsed(),
            });
        }
    }

    let bar = progress_bar(options.progress, count);
    let (batches, mut received) = tokio::sync::mpsc::channel::<Vec<ProfileInput>>(CHANNEL_BATCHES);
    let producer = tokio::task::spawn_blocking(move || {
        let mut generator = ProfileGenerator::new(seed, today);
        let mut remaining = count;
        while remaining > 0 {
            let rows = usize::try_from(remaining).map_or(BATCH_ROWS, |r| r.min(BATCH_ROWS));
            let batch: Vec<ProfileInput> = generator.by_ref().take(rows).collect();
            remaining -= batch.len() as u64;
            if batches.blocking_send(batch).is_err() {
                // The COPY side stopped (an error); it reports why.
                return;
            }
        }
    });

    let copied = async {
        let sink = tx
            .copy_in::<_, bytes::Bytes>(COPY_STATEMENT)
            .await
            .context("starting COPY into devops_api.users")?;
        let types = [
            Type::VARCHAR,
            Type::BPCHAR,
            Type::DATE,
            Type::VARCHAR,
            Type::VARCHAR,
            Type::VARCHAR,
        ];
        let mut writer = pin!(BinaryCopyInWriter::new(sink, &types));
        while let Some(batch) = received.recv().await {
            for row in &batch {
                let full_name = row.full_name.as_str();
                let gender = row.gender.as_str();
                let birth_date = row.birth_date.date();
                let department = row.department.as_str();
                let email = row.email.as_str();
                let username = row.username.as_str();
                let values: [&(dyn ToSql + Sync); 6] = [
                    &full_name,
                    &gender,
                    &birth_date,
                    &department,
                    &email,
                    &username,
                ];
                writer
                    .as_mut()
                    .write(&values)
                    .await
                    .context("streaming rows into devops_api.users")?;
            }
            bar.inc(batch.len() as u64);
        }
        let copied = writer
            .as_mut()
            .finish()
            .await
            .context("finishing COPY into devops_api.users")?;
        anyhow::Ok(copied)
    }
    .await;
    // Stop the producer (if the COPY failed) before waiting for it.
    drop(received);
    producer.await.context("the profile generator failed")?;
    let copied = match copied {
        Ok(copied) => copied,
        Err(error) => {
            bar.abandon();
            return Err(error);
        }
    };
    anyhow::ensure!(
        copied == count,
        "COPY inserted {copied} rows, {count} were generated"
    );
    tx.commit().await.context("committing the seed")?;
    bar.finish();

    Ok(SeedReport {
        inserted: copied,
        skipped_existing: None,
        elapsed: started.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use time::Month;

    use super::*;

    fn day(year: i32, month: Month, day: u8) -> Date {
        Date::from_calendar_date(year, month, day).unwrap()
    }

    fn pinned_today() -> Date {
        day(2026, Month::March, 15)
    }

    fn age_on(birth: Date, today: Date) -> i32 {
        let before_birthday =
            (u8::from(today.month()), today.day()) < (u8::from(birth.month()), birth.day());
        today.year() - birth.year() - i32::from(before_birthday)
    }

    fn first_word(full_name: &FullName) -> &str {
        full_name.as_str().split(' ').next().unwrap()
    }

    #[test]
    fn the_same_seed_gives_the_same_rows_and_another_seed_other_rows() {
        let a: Vec<_> = ProfileGenerator::new(42, pinned_today())
            .take(2_000)
            .collect();
        let b: Vec<_> = ProfileGenerator::new(42, pinned_today())
            .take(2_000)
            .collect();
        let c: Vec<_> = ProfileGenerator::new(43, pinned_today())
            .take(2_000)
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(default_count(42), default_count(42));
    }

    #[test]
    fn usernames_and_emails_are_unique_over_200_000_rows() {
        let mut usernames = HashSet::new();
        let mut emails = HashSet::new();
        let mut suffixed = 0;
        for row in ProfileGenerator::new(7, pinned_today()).take(200_000) {
            if row
                .username
                .as_str()
                .ends_with(|c: char| c.is_ascii_digit())
            {
                suffixed += 1;
            }
            assert_eq!(
                row.email.as_str(),
                format!("{}@fake-devops-db.internal", row.username)
            );
            assert!(usernames.insert(row.username), "duplicate username");
            assert!(emails.insert(row.email), "duplicate e-mail");
        }
        // ~9,500 (first, last) pairs: at this size almost every row needs a suffix.
        assert!(suffixed > 150_000, "{suffixed}");
    }

    #[test]
    fn the_username_is_first_and_last_name_then_a_counter() {
        let mut generator = ProfileGenerator::new(3, pinned_today());
        let mut seen = std::collections::HashMap::<String, u32>::new();
        for row in generator.by_ref().take(50_000) {
            let words: Vec<&str> = row.full_name.as_str().split(' ').collect();
            let base = format!(
                "{}.{}",
                fold_to_ascii(words[0]),
                fold_to_ascii(words[words.len() - 1])
            );
            let n = seen.entry(base.clone()).or_default();
            *n += 1;
            let expected = if *n == 1 { base } else { format!("{base}.{n}") };
            assert_eq!(row.username.as_str(), expected);
            assert!((2..=3).contains(&words.len()), "{}", row.full_name);
        }
    }

    #[test]
    fn every_row_passes_the_shared_parsers() {
        let today = pinned_today();
        for row in ProfileGenerator::new(11, today).take(20_000) {
            FullName::parse(row.full_name.as_str()).unwrap();
            Gender::parse(row.gender.as_str()).unwrap();
            BirthDate::parse(&row.birth_date.to_string())
                .unwrap()
                .ensure_not_after(today)
                .unwrap();
            Department::parse(row.department.as_str()).unwrap();
            Email::parse(row.email.as_str()).unwrap();
            Username::parse(row.username.as_str()).unwrap();
        }
    }

    #[test]
    fn accents_are_removed() {
        assert_eq!(fold_to_ascii("Érica"), "erica");
        assert_eq!(fold_to_ascii("João"), "joao");
        assert_eq!(fold_to_ascii("Conceição"), "conceicao");
        assert_eq!(fold_to_ascii("Íris"), "iris");
        assert_eq!(fold_to_ascii("Magalhães"), "magalhaes");
        // Every pt_PT name folds to plain a-z, so usernames are always valid.
        for name in PT_PT::NAME_FIRST_NAME.iter().chain(PT_PT::NAME_LAST_NAME) {
            let folded = fold_to_ascii(name);
            assert!(
                !folded.is_empty() && folded.bytes().all(|b| b.is_ascii_lowercase()),
                "{name}"
            );
        }
        let accented = ProfileGenerator::new(5, pinned_today())
            .take(5_000)
            .find(|row| first_word(&row.full_name) == "João")
            .expect("João is drawn within 5,000 rows");
        assert!(
            accented.username.as_str().starts_with("joao."),
            "{}",
            accented.username
        );
    }

    #[test]
    fn ages_are_18_to_65_for_a_pinned_today() {
        for today in [
            pinned_today(),
            day(2028, Month::February, 29),
            day(2027, Month::January, 1),
        ] {
            let mut ages = HashSet::new();
            for row in ProfileGenerator::new(13, today).take(50_000) {
                let age = age_on(row.birth_date.date(), today);
                assert!(
                    AGE_RANGE.contains(&age),
                    "{} is {age} on {today}",
                    row.birth_date
                );
                ages.insert(age);
            }
            assert_eq!(ages.len(), 48, "every age from 18 to 65 is drawn");
        }
        // The bounds themselves: turning 18 today is in, turning 66 today is out.
        let generator = ProfileGenerator::new(0, pinned_today());
        let earliest = Date::from_julian_day(generator.earliest_birth).unwrap();
        let latest =
            Date::from_julian_day(generator.earliest_birth + generator.birth_days - 1).unwrap();
        assert_eq!(latest, day(2008, Month::March, 15));
        assert_eq!(earliest, day(1960, Month::March, 16));
        assert_eq!(age_on(latest, pinned_today()), 18);
        assert_eq!(age_on(earliest, pinned_today()), 65);
    }

    #[test]
    fn known_first_names_are_classified_by_gender() {
        for male in [
            "João", "José", "António", "Luís", "Tomás", "Simão", "Vicente", "Rafael",
        ] {
            assert_eq!(first_name_gender(male), Gender::Male, "{male}");
        }
        for female in [
            "Maria", "Ana", "Inês", "Beatriz", "Isabel", "Leonor", "Matilde", "Alice", "Raquel",
        ] {
            assert_eq!(first_name_gender(female), Gender::Female, "{female}");
        }
        // The exception list names real pt_PT names (it would silently rot otherwise).
        for name in FEMALE_NOT_ENDING_IN_A {
            assert!(
                PT_PT::NAME_FIRST_NAME.contains(name),
                "{name} is not a pt_PT first name"
            );
        }
    }

    #[test]
    fn generated_first_names_agree_with_the_gender() {
        let mut seen = HashSet::new();
        for row in ProfileGenerator::new(17, pinned_today()).take(20_000) {
            let first = first_word(&row.full_name);
            assert_eq!(first_name_gender(first), row.gender, "{}", row.full_name);
            assert!(PT_PT::NAME_FIRST_NAME.contains(&first), "{first}");
            seen.insert((first.to_string(), row.gender));
        }
        assert!(seen.contains(&("João".to_string(), Gender::Male)));
        assert!(seen.contains(&("Maria".to_string(), Gender::Female)));
        assert!(seen.contains(&("Inês".to_string(), Gender::Female)));
    }

    #[test]
    fn departments_are_the_six_seeded_ones_all_drawn() {
        let mut seen = HashSet::new();
        for row in ProfileGenerator::new(19, pinned_today()).take(10_000) {
            assert!(
                Department::SEEDED.contains(&row.department.as_str()),
                "{}",
                row.department
            );
            seen.insert(row.department.as_str().to_string());
        }
        assert_eq!(seen.len(), Department::SEEDED.len());
    }

    #[test]
    fn the_default_count_is_300_to_500() {
        for seed in 0..200 {
            assert!(DEFAULT_COUNT_RANGE.contains(&default_count(seed)));
        }
    }

    #[test]
    fn february_29_minus_years_is_february_28_in_a_common_year() {
        assert_eq!(
            years_before(day(2028, Month::February, 29), 18),
            day(2010, Month::February, 28)
        );
        assert_eq!(
            years_before(day(2028, Month::February, 29), 4),
            day(2024, Month::February, 29)
        );
    }

    /// Times generation alone: `cargo test -p aside-origin --release seed::tests::generate_one_million -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing only"]
    fn generate_one_million_rows_timing() {
        let started = Instant::now();
        let mut bytes = 0;
        for row in ProfileGenerator::new(1, pinned_today()).take(1_000_000) {
            bytes += row.username.as_str().len();
        }
        eprintln!(
            "generated 1,000,000 rows in {:?} ({bytes} username bytes)",
            started.elapsed()
        );
    }

    /// Loads 1,000,000 rows (or `ASIDE_SEED_TEST_COUNT`) into the database at `ASIDE_SEED_TEST_DATABASE_URL`
    /// (migrated, and emptied by this test), then checks the "already seeded" path.
    #[tokio::test]
    #[ignore = "needs ASIDE_SEED_TEST_DATABASE_URL pointing at a migrated database it may empty"]
    async fn seed_one_million_rows_into_the_database_from_env() {
        let url = std::env::var("ASIDE_SEED_TEST_DATABASE_URL")
            .expect("set ASIDE_SEED_TEST_DATABASE_URL");
        let count: u64 = std::env::var("ASIDE_SEED_TEST_COUNT")
            .map(|c| c.parse().expect("a number"))
            .unwrap_or(1_000_000);
        let (mut client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);

        let options = SeedOptions {
            count: Some(count),
            seed: Some(2026),
            replace: true,
            progress: std::env::var_os("ASIDE_SEED_TEST_PROGRESS").is_some(),
        };
        let report = seed(&mut client, &options).await.unwrap();
        eprintln!("seeded {} rows in {:?}", report.inserted, report.elapsed);
        assert_eq!(report.inserted, count);
        assert_eq!(report.skipped_existing, None);

        let row = client
            .query_one(
                "SELECT count(*), count(DISTINCT username), count(DISTINCT email), min(id), max(id) \
                 FROM devops_api.users",
                &[],
            )
            .await
            .unwrap();
        let total: i64 = row.get(0);
        assert_eq!(total.unsigned_abs(), count);
        assert_eq!(row.get::<_, i64>(1), total);
        assert_eq!(row.get::<_, i64>(2), total);
        assert_eq!(row.get::<_, i32>(3), 1, "RESTART IDENTITY");

        let again = SeedOptions {
            count: Some(10),
            seed: None,
            replace: false,
            progress: false,
        };
        let skipped = seed(&mut client, &again).await.unwrap();
        assert_eq!(skipped.inserted, 0);
        assert_eq!(skipped.skipped_existing, Some(count));
    }
}
