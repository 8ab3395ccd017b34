//! What the key and token steps found, put into the draft: the token's
//! status fields and events, the Key condition and the published JWKS.

use kube::runtime::events::Event;

use crate::controller::Context;
use crate::controller::decide::conditions::State;
use crate::controller::decide::draft::{Draft, Slot};
use crate::controller::decide::key_ring::Ring;
use crate::controller::decide::reason::Reason;
use crate::controller::decide::secret_data::rfc3339;
use crate::controller::model::memory::{ClientMemory, TokenMemo};
use crate::controller::model::target::Target;
use crate::controller::steps::exchange;
use crate::controller::steps::keys::ResolvedKey;
use crate::controller::steps::token;
use crate::crd::SmartBackendClient;
use crate::smart::SigningKey;

/// What the token steps of one reconcile said, gathered for the draft.
#[derive(Default)]
pub(super) struct Tokens {
    /// The note TokenReady carries while the server's clock disagrees.
    pub(super) clock_note: Option<String>,
    /// The refresh request acted on.
    pub(super) handled: Option<String>,
    pub(super) trial_failed: bool,
    events: Vec<Event>,
}

impl Tokens {
    /// Puts what a token step learned into the client's memory, and notes
    /// what the server's clock says.
    pub(super) fn learn(
        &mut self,
        ctx: &Context,
        memory: &mut ClientMemory,
        memo: TokenMemo,
        server: &str,
    ) {
        if memo.handled_request.is_some() {
            self.handled = memo.handled_request.clone();
        }
        let observed = memo.clock_skew;
        let was = memory.learn(memo);
        let now = observed.or(was);
        let threshold = ctx.settings.clocks.skew_warning;
        let (note, event) = exchange::clock_report(was, now, threshold, server);
        self.clock_note = note;
        self.events.extend(event);
    }

    /// A good token: TokenReady, the token's status fields, its events.
    pub(super) fn record(self, draft: &mut Draft, good: token::Good) {
        let mut state = good.state;
        if let Some(note) = &self.clock_note {
            state.message = format!("{note}; {}", state.message);
        }
        let fields = &mut draft.fields;
        fields.token_expires_at = Some(rfc3339(good.expires_at));
        if good.new || fields.last_refresh_time.is_none() {
            fields.last_refresh_time = Some(rfc3339(good.issued_at));
        }
        fields.next_refresh_time = Some(rfc3339(good.next_refresh));
        fields.granted_scopes = good.granted_scope;
        fields.consecutive_failures = 0;
        fields.next_retry_time = None;
        if let Some(value) = self.handled {
            fields.handled_refresh_request = Some(value);
        }
        draft.events.extend(self.events);
        draft.events.extend(good.events);
        draft.token = Some(state);
    }
}

/// What the Key condition and the key fields show.
#[derive(Clone)]
pub(super) struct KeyShown<'a> {
    pub signing: &'a SigningKey,
    /// Where the key is: "in Secret ..." or "in Transit key ...", ....
    pub place: String,
    /// The key Secret, for a key held in one.
    pub secret_name: Option<&'a str>,
    pub ring: &'a Ring,
    pub note: Option<String>,
}

impl<'a> KeyShown<'a> {
    /// `signing` (the resolved key, or the one a rotation step made
    /// current) shown where `key` was found.
    pub fn new(
        key: &'a ResolvedKey,
        signing: &'a SigningKey,
        ring: &'a Ring,
        note: Option<String>,
    ) -> Self {
        KeyShown {
            signing,
            place: key.place(),
            secret_name: key
                .key_manager
                .is_none()
                .then_some(key.secret_name.as_str()),
            ring,
            note,
        }
    }
}

/// The Key condition, the key fields of the status and the published JWKS.
pub(super) fn record_key(
    ctx: &Context,
    target: &Target<'_>,
    sbc: &SmartBackendClient,
    shown: KeyShown<'_>,
    draft: &mut Draft,
) {
    let KeyShown {
        signing,
        place,
        secret_name,
        ring,
        note,
    } = shown;
    let jwks = ring.published().to_json();
    let jwks_set = sbc.spec.signing.jwks_set.clone();
    ctx.jwks.publish(
        target.namespace,
        target.name,
        crate::controller::watch::jwks::Published {
            jwks: jwks.clone(),
            set: jwks_set.clone(),
        },
    );
    let mut message = format!(
        "{} key, kid {}, {place}",
        signing.algorithm(),
        signing.kid(),
    );
    if let Some(note) = note {
        message = format!("{message}; {note}");
    }
    draft.set(Slot::Key, State::ok(Reason::KeyReady, message));
    draft.fields.algorithm = Some(signing.algorithm());
    draft.fields.kid = Some(signing.kid().to_string());
    draft.fields.key_secret_name = secret_name.map(str::to_string);
    draft.fields.public_jwks = Some(jwks);
    draft.fields.keys = ring.status();
    draft.fields.jwks_uri = ctx.settings.jwks_public_url.as_ref().map(|base| {
        crate::controller::watch::jwks::public_uri(
            base,
            target.namespace,
            target.name,
            jwks_set.as_deref(),
        )
    });
}
