//! The notification e-mail: golden text and HTML for each kind, and the payload cannot inject headers or markup.
//!
//! The golden text parts are `tests/golden/email/<kind>.txt`; the golden HTML parts are the samples the README
//! links to, `docs/email-<kind>.html`, so reviewers see exactly what is tested.
//! `UPDATE_GOLDEN=1 cargo test -p po-sync --test email_rendering` rewrites both (as does the
//! `render-email` example for the HTML); review the diff (and open the HTML) before committing.

#[path = "email_samples.rs"]
mod email_samples;

use po_sync::email::{Email, EmailSettings, MAX_SUBJECT_CHARS, render};
use po_sync::message::{InvoiceLink, NotificationDetail, NotificationEvent, OperatorCancellation};
use std::path::PathBuf;

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/email")
}

fn docs_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs")
}

fn rendered(event: &NotificationEvent) -> Email {
    render(event, &EmailSettings::default()).unwrap()
}

/// The text golden carries the subject too, as the first line, so one file shows what a reader sees first.
fn text_file(email: &Email) -> String {
    format!("Subject: {}\n\n{}\n", email.subject, email.text)
}

#[test]
fn each_kind_renders_as_its_golden_text_and_html() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut mismatched = Vec::new();
    for (name, event) in email_samples::all() {
        let email = rendered(&event);
        for (path, actual) in [
            (golden_dir().join(format!("{name}.txt")), text_file(&email)),
            (docs_dir().join(format!("email-{name}.html")), format!("{}\n", email.html)),
        ] {
            if update {
                std::fs::create_dir_all(golden_dir()).unwrap();
                std::fs::write(&path, &actual).unwrap();
                continue;
            }
            let expected = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1 to create it)", path.display()));
            if expected != actual {
                mismatched.push(format!("{}:\n--- expected\n{expected}\n--- actual\n{actual}", path.display()));
            }
        }
    }
    assert!(mismatched.is_empty(), "golden e-mails differ (UPDATE_GOLDEN=1 to accept):\n{}", mismatched.join("\n"));
}

#[test]
fn the_mismatch_e_mail_says_what_the_issue_asks_for() {
    let email = rendered(&email_samples::mismatch());
    assert_eq!(email.subject, "[po-sync] PO P002271 does not reconcile (2 discrepancies)");
    for needle in [
        "Purchase order P002271 does not add up against its invoices (2 discrepancies), and it was not sent to AppZen.",
        "Komet PO id:   12345",
        "Ship date:     2020-03-27",
        "Arrival date:  2020-03-27",
        "Location:      Chicago (02)",
        "Vendor:        Miami L Vendor (AV)",
        "Invoice 01-P002272: invoice items plus additional charges equal the invoice amount",
        "expected 30.00, actual 40.00, difference +10.00",
        "Invoice whole PO: all items add up to the PO subtotal",
        "expected 60.00, actual 70.00, difference +10.00",
        "reconcile the purchase order again in Komet",
        "(Komet's links stop working at 2026-11-21 23:00 UTC)",
        // Komet's sample sends `www.kometsales.com/url`; the payload parser gives it a scheme.
        "01-P002271: https://www.kometsales.com/url",
        "Webhook received:  2026-11-21 17:00 UTC",
    ] {
        assert!(email.text.contains(needle), "text lacks {needle:?}:\n{}", email.text);
    }
    for needle in [
        "<td style=\"padding:6px 8px;border-bottom:1px solid #d0d7de;white-space:nowrap;\">01-P002272</td>",
        ">+10.00</td>",
        ">30.00</td>",
        ">40.00</td>",
        "2026-11-21 23:00 UTC",
    ] {
        assert!(email.html.contains(needle), "html lacks {needle:?}:\n{}", email.html);
    }
    assert!(email.html.contains("01-P002272: <a href=\"https://www.kometsales.com/url\">"), "{}", email.html);
}

#[test]
fn the_rejection_e_mail_shows_appzen_s_status_and_message() {
    let email = rendered(&email_samples::appzen_rejected());
    assert_eq!(email.subject, "[po-sync] PO P004410 rejected by AppZen (HTTP 400)");
    assert!(email.text.contains("Status:          HTTP 400 Bad Request"), "{}", email.text);
    assert!(email.text.contains("Message:         supplier_id V-0042 does not exist for entity 2"), "{}", email.text);
    assert!(email.html.contains("<a href=\"https://files.kometsales.com/invoices/01-P004410.pdf\">"), "{}", email.html);
}

#[test]
fn a_po_cancelled_by_an_operator_tells_how_to_reactivate_it_through_po_sync() {
    use chrono::TimeZone;
    let mut event = email_samples::cancelled_at_destination();
    let at = chrono::Utc.with_ymd_and_hms(2026, 11, 20, 8, 30, 0).unwrap();
    event.detail = NotificationDetail::CancelledAtDestination {
        id: Some("PO-LHROM9-0024".to_owned()),
        operator: Some(OperatorCancellation { at, reason: Some("duplicate of\nP004411 <b>".to_owned()) }),
    };
    let email = rendered(&event);
    assert_eq!(
        email.subject,
        "[po-sync] PO P004410 is cancelled for Exsited by an operator: the new version was not sent"
    );
    for needle in [
        "Komet sent a new version of purchase order P004410, which an operator cancelled for Exsited (Exsited's id \
         PO-LHROM9-0024) with po-sync-admin cancel on 2026-11-20 08:30 UTC (reason: duplicate of P004411 <b>), so the \
         new version was not sent to Exsited.",
        "po-sync-admin reactivate 48213",
        "po-sync-admin replay --po 48213 --latest",
    ] {
        assert!(email.text.contains(needle), "text lacks {needle:?}:\n{}", email.text);
    }
    assert!(!email.text.contains("reactivate it in Exsited"), "{}", email.text);
    assert!(email.html.contains("duplicate of P004411 &#60;b&#62;"), "{}", email.html);

    // AppZen, cancelled before any version reached it: no id to name.
    event.destination = po_sync::destination::Destination::Appzen;
    event.detail = NotificationDetail::CancelledAtDestination {
        id: None,
        operator: Some(OperatorCancellation { at, reason: None }),
    };
    let email = rendered(&event);
    assert!(
        email.text.starts_with(
            "Komet sent a new version of purchase order P004410, which an operator cancelled for AppZen with \
             po-sync-admin cancel on 2026-11-20 08:30 UTC, so the new version was not sent to AppZen."
        ),
        "{}",
        email.text
    );
}

#[test]
fn an_exsited_outage_names_exsited_and_its_fixes_never_appzen_s() {
    use po_sync::destination::Destination;
    use po_sync::outage::OutageCause;
    let email = rendered(&email_samples::exsited_outage());
    assert_eq!(email.subject, "[po-sync] Exsited refuses po-sync's credentials: purchase orders are waiting");
    for needle in [
        "Exsited refuses po-sync's credentials (HTTP 401 even with a new token, or 403)",
        "Exsited's answer\n  Status:          HTTP 401\n",
        "INVALID_CLIENT: invalid client_id or client_secret",
        "Since 2026-11-21 17:00 UTC, Exsited gives no verdict on any purchase order (last: HTTP 401).",
        "client_id and client_secret in the Exsited secret (EXSITED_SECRET_ARN, the stack output ExsitedSecretArn)",
        "Kind:              exsited_outage",
    ] {
        assert!(email.text.contains(needle), "text lacks {needle:?}:\n{}", email.text);
    }
    assert!(email.html.contains(">Exsited's answer</h2>"), "{}", email.html);
    // Only the footer, which describes po-sync itself, names AppZen.
    let body = email.text.split("\n--\n").next().unwrap();
    assert!(!body.contains("AppZen"), "{body}");

    // Each cause names its fix: the base URL, and Exsited's status when it is throttling or down.
    let at = email_samples::received_at();
    let endpoint =
        rendered(&NotificationEvent::outage_at(Destination::Exsited, OutageCause::Endpoint, at, "HTTP 404", None));
    assert_eq!(
        endpoint.subject,
        "[po-sync] Exsited is not reached at the configured address: purchase orders are waiting"
    );
    assert!(endpoint.text.contains("ExsitedBaseUrl (EXSITED_BASE_URL)"), "{}", endpoint.text);
    assert!(!endpoint.text.contains("'s answer\n"), "no answer section without an answer: {}", endpoint.text);
    let down =
        rendered(&NotificationEvent::outage_at(Destination::Exsited, OutageCause::Unavailable, at, "timeout", None));
    assert_eq!(down.subject, "[po-sync] Exsited is unavailable: purchase orders are waiting");
    assert!(down.text.contains("check Exsited's status with Exsited support"), "{}", down.text);
    assert!(down.text.contains("(last: timeout)"), "{}", down.text);
    let event = NotificationEvent::outage_at(Destination::Exsited, OutageCause::Throttled, at, "HTTP 429", None);
    assert_eq!(event.group_id(), "exsited-outage");
    assert_eq!(NotificationEvent::from_json(&event.to_json()).unwrap(), event, "the event reads back as written");
}

#[test]
fn dead_letter_and_poison_e_mails_name_the_attempts_and_the_message() {
    let email = rendered(&email_samples::dead_lettered_webhook());
    assert_eq!(email.subject, "[po-sync] PO P002271 not delivered to AppZen after 5 attempts");
    assert!(
        email.text.starts_with("Purchase order P002271 could not be delivered to AppZen after 5 attempts"),
        "{}",
        email.text
    );
    let parked_sentence =
        "The webhook is kept for 14 days in po-sync's parked queue and can be redriven after the cause is fixed";
    assert!(email.text.contains(parked_sentence), "{}", email.text);
    assert!(email.html.contains("kept for 14 days in po-sync&#39;s parked queue"), "{}", email.html);

    // Without a parked queue nothing is kept, and the e-mail must not promise a redrive.
    let mut unparked = email_samples::dead_lettered_webhook();
    if let NotificationDetail::DeadLettered { parked, .. } = &mut unparked.detail {
        *parked = false;
    }
    let email = rendered(&unparked);
    assert!(!email.text.contains("parked queue") && !email.text.contains("redrive"), "{}", email.text);
    assert!(email.text.contains("po-sync did not keep the webhook"), "{}", email.text);
    assert!(email.text.contains("reconcile the purchase order again in Komet"), "{}", email.text);

    let email = rendered(&email_samples::poison_message());
    assert_eq!(email.subject, "[po-sync] Queue message could not be read and was set aside");
    assert!(email.text.contains("SQS message id:    5d3e2c1b-4a59-4f68-8e7d-6c5b4a392817"), "{}", email.text);
    assert!(!email.text.contains("Purchase order\n"), "no PO section without a PO: {}", email.text);
}

#[test]
fn a_po_number_with_crlf_and_bcc_cannot_add_a_header_or_a_line() {
    let mut event = email_samples::mismatch();
    let po = &mut event.webhook.as_mut().unwrap().po;
    po.po_number = "P002271\r\nBcc: attacker@evil.example\r\n\r\nX-Injected: 1\u{2028}\u{0}".to_owned();
    let email = rendered(&event);
    assert!(!email.subject.contains(['\r', '\n', '\u{2028}', '\u{0}']), "{:?}", email.subject);
    assert_eq!(
        email.subject,
        "[po-sync] PO P002271 Bcc: attacker@evil.example X-Injected: 1 does not reconcile (2 discrepancies)"
    );
    assert!(
        email.text.contains("  PO number:     P002271 Bcc: attacker@evil.example X-Injected: 1\n"),
        "{}",
        email.text
    );
    assert!(
        !email.text.lines().any(|line| line.starts_with("Bcc:") || line.starts_with("X-Injected")),
        "{}",
        email.text
    );
    assert!(!email.html.contains("\r"), "{}", email.html);

    // However long the payload value, the subject stays bounded.
    event.webhook.as_mut().unwrap().po.po_number = "P".repeat(10_000);
    let subject = rendered(&event).subject;
    assert!(subject.chars().count() <= MAX_SUBJECT_CHARS, "{subject}");
    assert!(subject.contains("PPP…"), "{subject}");
}

#[test]
fn html_and_quotes_in_vendor_and_location_names_arrive_as_text() {
    let mut event = email_samples::mismatch();
    let po = &mut event.webhook.as_mut().unwrap().po;
    po.vendors = vec![r#"<script>alert("x")</script> & 'Rosas' "Lda""#.to_owned()];
    po.location = Some(r#"Chicago <b onmouseover="steal()">North</b>"#.to_owned());
    let links = &mut event.webhook.as_mut().unwrap().invoice_links;
    links.push(InvoiceLink {
        invoice_number: "<i>9</i>".to_owned(),
        url: "javascript:alert(1)".to_owned(),
        archived: None,
        not_archived: None,
    });
    links.push(InvoiceLink {
        invoice_number: "10".to_owned(),
        url: r#"https://x.example/a"onclick="b"#.to_owned(),
        archived: None,
        not_archived: Some("<b>expired</b>".to_owned()),
    });
    let email = rendered(&event);
    for raw in ["<script>", "<b onmouseover", "<i>9</i>", "href=\"javascript:", "\"onclick=\"b", "'Rosas'"] {
        assert!(!email.html.contains(raw), "html contains {raw:?}:\n{}", email.html);
    }
    for escaped in [
        // askama writes numeric character references.
        "&#60;script&#62;alert(&#34;x&#34;)&#60;/script&#62; &#38; &#39;Rosas&#39; &#34;Lda&#34;",
        "Chicago &#60;b onmouseover=&#34;steal()&#34;&#62;North&#60;/b&#62;",
        "&#60;i&#62;9&#60;/i&#62;: javascript:alert(1)",
        "href=\"https://x.example/a&#34;onclick=&#34;b\"",
        "not archived: &#60;b&#62;expired&#60;/b&#62;",
    ] {
        assert!(email.html.contains(escaped), "html lacks {escaped:?}:\n{}", email.html);
    }
    // The text part is plain text: the names appear as they are.
    assert!(email.text.contains(r#"Vendor:        <script>alert("x")</script> & 'Rosas' "Lda""#), "{}", email.text);
}

#[test]
fn unicode_names_survive_in_subject_text_and_html() {
    let mut event = email_samples::mismatch();
    let po = &mut event.webhook.as_mut().unwrap().po;
    po.po_number = "P-Ω7 Ñandú".to_owned();
    po.vendors = vec!["Flores Bogotá 花店 🌷".to_owned()];
    po.location = Some("Zürich (ZH)".to_owned());
    let email = rendered(&event);
    assert_eq!(email.subject, "[po-sync] PO P-Ω7 Ñandú does not reconcile (2 discrepancies)");
    for part in [&email.text, &email.html] {
        for name in ["P-Ω7 Ñandú", "Flores Bogotá 花店 🌷", "Zürich (ZH)"] {
            assert!(part.contains(name), "lacks {name:?}:\n{part}");
        }
    }
}

#[test]
fn the_subject_prefix_is_configurable() {
    let email = render(&email_samples::mismatch(), &EmailSettings { subject_prefix: "[Komet PO]".to_owned() }).unwrap();
    assert_eq!(email.subject, "[Komet PO] PO P002271 does not reconcile (2 discrepancies)");
}
