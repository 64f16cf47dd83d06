//! What messaging reads of a profile: addresses, consent, time zone, locale, and the template data.

use kizuna_identity::IdKind;
use kizuna_messaging::Deferred;
use kizuna_messaging::governor::Consent;
use kizuna_messaging::{Channel, Purpose};
use kizuna_profiles::ConsentStatus;
use kizuna_store::StoredProfile;
use serde_json::{Value, json};

pub(crate) struct Recipient {
    pub email: Option<String>,
    pub phone: Option<String>,
    pub line: Option<String>,
    pub timezone: Option<String>,
    pub locale: Option<String>,
    consent: std::collections::BTreeMap<String, std::collections::BTreeMap<String, ConsentStatus>>,
    pub unsubscribed_topics: Vec<String>,
    /// `profile` in templates: traits at the top level, plus `id` and the addresses.
    pub template_data: Value,
    /// `profile.computed` in templates.
    pub computed: Option<Deferred>,
}

fn text(value: Option<&Value>) -> Option<String> {
    non_empty(value.and_then(Value::as_str))
}

fn non_empty(text: Option<&str>) -> Option<String> {
    text.map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned)
}

impl Recipient {
    /// Takes the profile: its computed attributes move into the template data, summarised only if a template
    /// reads `profile.computed`.
    pub fn of(profile: StoredProfile) -> Recipient {
        let identity = |kind: IdKind| profile.identities.iter().find(|i| i.kind == kind).map(|i| i.value.clone());
        let traits = profile.state.trait_values();
        let computed = profile.state.computed;
        let timezone = text(traits.get("timezone")).or_else(|| non_empty(computed.timezone()));
        let locale = text(traits.get("locale")).or_else(|| non_empty(computed.locale()));
        let email = identity(IdKind::Email).or_else(|| text(traits.get("email")).map(|e| e.to_lowercase()));
        let phone = identity(IdKind::Phone);
        let line = identity(IdKind::LineUserId);
        let unsubscribed_topics = traits
            .get("unsubscribed_topics")
            .and_then(Value::as_array)
            .map(|topics| topics.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default();
        let mut data = serde_json::Map::new();
        for (k, v) in traits {
            data.insert(k, v);
        }
        data.insert("id".into(), json!(profile.id.to_string()));
        data.insert("email".into(), json!(email));
        data.insert("phone".into(), json!(phone));
        if let Some(scores) = profile.scores {
            data.insert("predictions".into(), scores);
        }
        let consent = profile
            .state
            .consent
            .into_iter()
            .map(|(channel, purposes)| {
                (channel, purposes.into_iter().map(|(purpose, entry)| (purpose, entry.status)).collect())
            })
            .collect();
        Recipient {
            email,
            phone,
            line,
            timezone,
            locale,
            consent,
            unsubscribed_topics,
            template_data: Value::Object(data),
            computed: Some(Deferred::new(move || computed.summary())),
        }
    }

    /// Sample data for previews without a profile.
    pub fn sample() -> Recipient {
        Recipient {
            email: Some("sample@example.com".into()),
            phone: Some("+819000000000".into()),
            line: Some("U0000000000000000000000000000000".into()),
            timezone: None,
            locale: None,
            consent: Default::default(),
            unsubscribed_topics: Vec::new(),
            template_data: json!({"id": "0", "first_name": "Sample", "last_name": "Customer",
                                  "email": "sample@example.com", "computed": {"orders_count": 2, "revenue": 120.0}}),
            computed: None,
        }
    }

    pub fn address(&self, channel: Channel) -> Option<String> {
        match channel {
            Channel::Email => self.email.clone(),
            Channel::Sms => self.phone.clone(),
            Channel::Line => self.line.clone(),
            Channel::Webhook => None,
        }
    }

    pub fn consent(&self, channel: Channel, purpose: Purpose) -> Consent {
        match self.consent.get(channel.as_str()).and_then(|p| p.get(purpose.as_str())) {
            Some(ConsentStatus::Granted) => Consent::Granted,
            Some(ConsentStatus::Denied) => Consent::Denied,
            None => Consent::Unknown,
        }
    }
}
