//! The Exsited sandbox keeps Exsited's purchase-orders v3 contract, over real HTTP on 127.0.0.1.

use std::time::Duration;

use po_sync_local::exsited_sandbox::{Config, Failure, PURCHASE_ORDERS_PATH, RunningSandbox, Sandbox, TOKEN_PATH};
use reqwest::Method;
use serde_json::{Value, json};

async fn start() -> RunningSandbox {
    Sandbox::new(Config::default()).spawn(0).await.unwrap()
}

/// What the sandbox answered: status, `Retry-After`, body (JSON, `Null` when empty).
struct Answered {
    status: u16,
    retry_after: Option<String>,
    body: Value,
}

impl Answered {
    /// `CODE message` of each error.
    fn errors(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("not in the error shape: {}", self.body))
            .iter()
            .map(|e| format!("{} {}", e["code"].as_str().unwrap(), e["message"].as_str().unwrap()))
            .collect()
    }

    fn order(&self) -> &Value {
        &self.body["purchase_order"]
    }
}

async fn call(base: &str, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Answered {
    let mut request = reqwest::Client::new().request(method, format!("{base}{path}"));
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    if let Some(body) = body {
        request = request.header("content-type", "application/json").body(body.to_string());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
    let text = response.text().await.unwrap();
    let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() };
    Answered { status, retry_after, body }
}

fn token_request(secret: &str) -> Value {
    json!({
        "grant_type": "client_credentials",
        "client_id": "local-exsited-client",
        "client_secret": secret,
        "redirect_uri": "https://po-sync.example.com/callback",
    })
}

async fn token(base: &str) -> String {
    let answer = call(base, Method::POST, TOKEN_PATH, None, Some(token_request("local-exsited-secret"))).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.body["access_token"].as_str().unwrap().to_owned()
}

async fn create(base: &str, token: &str, order: Value) -> Answered {
    call(base, Method::POST, PURCHASE_ORDERS_PATH, Some(token), Some(json!({ "purchase_order": order }))).await
}

async fn get(base: &str, token: &str, id: &str) -> Answered {
    call(base, Method::GET, &format!("{PURCHASE_ORDERS_PATH}/{id}"), Some(token), None).await
}

fn line(item: &str, quantity: &str, price: &str) -> Value {
    json!({
        "item_id": item,
        "item_name": format!("{item} line"),
        "item_quantity": quantity,
        "item_price_snapshot": {"pricing_rule": {"price_type": "INCREMENTAL_PER_UNIT_PRICING", "price": price}},
    })
}

fn order(lines: Vec<Value>) -> Value {
    json!({
        "currency": "USD",
        "purchase_order_note": "Komet PO P004410 (id 48213); invoices 01-P004410",
        "account_id": "SUP-0001",
        "price_tax_inclusive": "false",
        "issue_date": "2026-02-09",
        "lines": lines,
    })
}

fn amounts(order: &Value) -> (String, String, String) {
    let text = |key: &str| order[key].as_str().unwrap_or_else(|| panic!("{key} in {order}")).to_owned();
    (text("subtotal"), text("tax"), text("total"))
}

#[tokio::test]
async fn token_then_create_then_get_with_exact_decimal_string_totals() {
    let sandbox = start().await;
    let base = sandbox.base_url();
    let answer = call(&base, Method::POST, TOKEN_PATH, None, Some(token_request("local-exsited-secret"))).await;
    assert_eq!(
        (answer.status, &answer.body["expires_in"], &answer.body["token_type"]),
        (200, &json!(3600), &json!("Bearer"))
    );
    assert!(answer.body["refresh_token"].as_str().is_some_and(|r| !r.is_empty()));
    let token = answer.body["access_token"].as_str().unwrap();

    let created =
        create(&base, token, order(vec![line("FLOWERS", "3", "12.345000"), line("ADDITIONAL_CHARGES", "1", "0.10")]))
            .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let po = created.order();
    // Six fraction digits, computed exactly: 3 × 12.345 + 1 × 0.10.
    assert_eq!(amounts(po), ("37.135000".into(), "0.000000".into(), "37.135000".into()));
    let id = po["id"].as_str().unwrap();
    let (prefix, counter) = id.strip_prefix("PO-").unwrap().split_once('-').unwrap();
    assert!(prefix.len() == 6 && prefix.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()), "{id}");
    assert_eq!(counter, "0001");
    assert_eq!(
        (&po["status"], &po["price_tax_inclusive"], &po["account_id"], &po["currency"]["name"], &po["issue_date"]),
        (&json!("ACTIVE"), &json!("false"), &json!("SUP-0001"), &json!("USD"), &json!("2026-02-09"))
    );
    assert!(po["uuid"].as_str().is_some_and(|u| u.len() == 36) && po["currency"]["uuid"].is_string());
    let lines = po["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 2);
    assert_eq!(
        (&lines[0]["item_quantity"], &lines[0]["item_price_snapshot"]["pricing_rule"]["price"], &lines[0]["total"]),
        (&json!("3.000000"), &json!("12.345000"), &json!("37.035000"))
    );
    assert_eq!(lines[1]["subtotal"], "0.100000");
    assert_eq!(lines[0]["item_uuid"].as_str(), sandbox.item_uuid("FLOWERS").as_deref());
    assert!(lines[0]["uuid"].is_string() && lines[0]["uuid"] != lines[1]["uuid"], "each line has its own uuid");

    let read = get(&base, token, id).await;
    assert_eq!((read.status, read.order()), (200, po), "a get answers what the create answered");
    assert_eq!(sandbox.purchase_orders(), vec![po.clone()]);

    // What po-sync's mapping sends (quantity "1", prices as Decimal writes them) adds up to the cent too.
    let mapped = order(vec![line("FLOWERS", "1", "500.10"), line("FLOWERS", "1", "0.1"), line("FLOWERS", "1", "0.2")]);
    let created = create(&base, token, mapped).await;
    assert_eq!(amounts(created.order()).2, "500.400000");
    assert!(created.order()["id"].as_str().unwrap().ends_with("-0002"), "the counter goes on");
}

#[tokio::test]
async fn a_json_number_where_a_string_is_due_is_a_400_naming_the_path() {
    let sandbox = start().await;
    let base = sandbox.base_url();
    let token = token(&base).await;
    let mut body = order(vec![line("FLOWERS", "1", "1.00"), line("FLOWERS", "2", "1.00")]);
    body["lines"][0]["item_quantity"] = json!(3);
    body["lines"][1]["item_price_snapshot"]["pricing_rule"]["price"] = json!(12.5);
    body["price_tax_inclusive"] = json!(false);
    let refused = create(&base, &token, body).await;
    assert_eq!(refused.status, 400);
    assert_eq!(
        refused.errors(),
        [
            "INVALID_VALUE purchase_order.price_tax_inclusive: expected the string \"true\" or \"false\", found false",
            "INVALID_VALUE purchase_order.lines[0].item_quantity: expected a decimal string like \"12.50\", found the number 3",
            "INVALID_VALUE purchase_order.lines[1].item_price_snapshot.pricing_rule.price: expected a decimal string like \"12.50\", found the number 12.5",
        ]
    );
    let mut exponent = order(vec![line("FLOWERS", "1e2", "1.00")]);
    exponent["lines"][0]["item_price_snapshot"]["pricing_rule"]["price"] = json!("1,50");
    let refused = create(&base, &token, exponent).await;
    assert_eq!(refused.errors().len(), 2, "{:?}", refused.errors());
    assert!(
        refused.errors()[0].contains("lines[0].item_quantity: expected a decimal string"),
        "{:?}",
        refused.errors()
    );
    assert!(sandbox.purchase_orders().is_empty(), "nothing is created from a refused request");
}

#[tokio::test]
async fn an_unknown_account_or_item_is_a_400_naming_it() {
    let sandbox = start().await;
    let base = sandbox.base_url();
    let token = token(&base).await;
    let mut body = order(vec![line("FLOWERS", "1", "1.00"), line("ROSES", "1", "1.00")]);
    body["account_id"] = json!("V-0042");
    let refused = create(&base, &token, body.clone()).await;
    assert_eq!(refused.status, 400);
    assert_eq!(
        refused.errors(),
        [
            "UNKNOWN_ACCOUNT purchase_order.account_id: no supplier account \"V-0042\" (known: SUP-0001, SUP-0002)",
            "UNKNOWN_ITEM purchase_order.lines[1].item_id: no item \"ROSES\" (known: ADDITIONAL_CHARGES, FLOWERS)",
        ]
    );
    // Both can be added, over the control endpoints.
    for (path, id) in [("/_sandbox/accounts", "V-0042"), ("/_sandbox/items", "ROSES")] {
        assert_eq!(call(&base, Method::POST, path, None, Some(json!({ "id": id }))).await.status, 200);
    }
    assert_eq!(create(&base, &token, body).await.status, 201);
}

#[tokio::test]
async fn a_second_token_ends_the_first() {
    let sandbox = start().await;
    let base = sandbox.base_url();
    let first = token(&base).await;
    assert_eq!(call(&base, Method::GET, PURCHASE_ORDERS_PATH, Some(&first), None).await.status, 200);
    let second = token(&base).await;
    assert_ne!(first, second);
    let refused = call(&base, Method::GET, PURCHASE_ORDERS_PATH, Some(&first), None).await;
    assert_eq!(refused.status, 401);
    assert_eq!(
        refused.errors(),
        ["INVALID_TOKEN the access token was ended: a newer one was issued for these credentials"]
    );
    assert_eq!(call(&base, Method::GET, PURCHASE_ORDERS_PATH, Some(&second), None).await.status, 200);
    assert_eq!(sandbox.tokens_issued(), 2);
}

#[tokio::test]
async fn an_expired_token_is_401_until_a_new_one_is_fetched() {
    let sandbox = start().await;
    let base = sandbox.base_url();
    sandbox.set_token_lifetime(Duration::from_millis(300));
    let answer = call(&base, Method::POST, TOKEN_PATH, None, Some(token_request("local-exsited-secret"))).await;
    assert_eq!(answer.body["expires_in"], 1, "whole seconds, rounded up");
    let short = answer.body["access_token"].as_str().unwrap().to_owned();
    for _ in 0..3 {
        assert_eq!(call(&base, Method::GET, PURCHASE_ORDERS_PATH, Some(&short), None).await.status, 200);
    }
    assert_eq!(sandbox.tokens_issued(), 1, "one token serves every request until it expires");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let refused = call(&base, Method::GET, PURCHASE_ORDERS_PATH, Some(&short), None).await;
    assert_eq!(
        (refused.status, refused.errors()),
        (401, vec!["INVALID_TOKEN the access token has expired".to_owned()])
    );

    // Expiring on demand, over the control endpoint.
    sandbox.set_token_lifetime(Duration::from_secs(3600));
    let fresh = token(&base).await;
    assert_eq!(call(&base, Method::GET, PURCHASE_ORDERS_PATH, Some(&fresh), None).await.status, 200);
    let expired = call(&base, Method::POST, "/_sandbox/expire-tokens", None, None).await;
    assert_eq!(expired.body, json!({ "expired": 1 }));
    assert_eq!(call(&base, Method::GET, PURCHASE_ORDERS_PATH, Some(&fresh), None).await.status, 401);
    let refreshed = token(&base).await;
    assert_eq!(call(&base, Method::GET, PURCHASE_ORDERS_PATH, Some(&refreshed), None).await.status, 200);
    assert_eq!(sandbox.tokens_issued(), 3);
}

#[tokio::test]
async fn the_token_endpoint_and_the_api_refuse_what_is_not_theirs() {
    let sandbox = start().await;
    let base = sandbox.base_url();
    let wrong_secret = call(&base, Method::POST, TOKEN_PATH, None, Some(token_request("guess"))).await;
    assert_eq!(
        (wrong_secret.status, wrong_secret.errors()),
        (401, vec!["INVALID_CLIENT invalid client_id or client_secret".to_owned()])
    );
    let mut password = token_request("local-exsited-secret");
    password["grant_type"] = json!("password");
    let refused = call(&base, Method::POST, TOKEN_PATH, None, Some(password)).await;
    assert_eq!((refused.status, refused.body["errors"][0]["code"].as_str()), (401, Some("UNSUPPORTED_GRANT_TYPE")));
    let mut incomplete = token_request("local-exsited-secret");
    incomplete.as_object_mut().unwrap().remove("redirect_uri");
    let refused = call(&base, Method::POST, TOKEN_PATH, None, Some(incomplete)).await;
    assert_eq!((refused.status, refused.errors()), (400, vec!["REQUIRED redirect_uri: is required".to_owned()]));
    assert_eq!(sandbox.tokens_issued(), 0);

    let no_token = call(&base, Method::GET, PURCHASE_ORDERS_PATH, None, None).await;
    assert_eq!(no_token.status, 401);
    assert_eq!(call(&base, Method::GET, PURCHASE_ORDERS_PATH, Some("made-up"), None).await.status, 401);
    let basic = reqwest::Client::new()
        .get(format!("{base}{PURCHASE_ORDERS_PATH}"))
        .header("authorization", "Basic bG9jYWw6c2VjcmV0")
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 401);

    // A body without Content-Type: application/json is 415.
    let token = token(&base).await;
    let untyped = reqwest::Client::new()
        .post(format!("{base}{PURCHASE_ORDERS_PATH}"))
        .bearer_auth(&token)
        .body(json!({ "purchase_order": order(vec![line("FLOWERS", "1", "1")]) }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(untyped.status(), 415);
}

#[tokio::test]
async fn information_takes_the_hyphenated_wrapper() {
    let sandbox = start().await;
    let base = sandbox.base_url();
    let token = token(&base).await;
    let created = create(&base, &token, order(vec![line("FLOWERS", "1", "1.00")])).await;
    let id = created.order()["id"].as_str().unwrap();
    let path = format!("{PURCHASE_ORDERS_PATH}/{id}/information");

    let wrong = json!({ "purchase_order": { "purchase_order_note": "Komet PO P004410, version 2" } });
    let refused = call(&base, Method::PATCH, &path, Some(&token), Some(wrong)).await;
    assert_eq!(refused.status, 400);
    assert_eq!(
        refused.errors(),
        [
            "UNKNOWN_FIELD purchase_order: unknown field; this endpoint takes its fields under \"purchase-order\"",
            "REQUIRED purchase-order: is required",
        ]
    );
    let not_here = json!({ "purchase-order": { "account_id": "SUP-0002" } });
    let refused = call(&base, Method::PATCH, &path, Some(&token), Some(not_here)).await;
    assert!(refused.errors()[0].starts_with("UNKNOWN_FIELD purchase-order.account_id"), "{:?}", refused.errors());

    let right = json!({ "purchase-order": {
        "purchase_order_note": "Komet PO P004410, version 2", "expected_completion_date": "2026-02-20"
    }});
    let changed = call(&base, Method::PATCH, &path, Some(&token), Some(right)).await;
    assert_eq!(changed.status, 200, "{}", changed.body);
    assert_eq!(changed.order()["purchase_order_note"], "Komet PO P004410, version 2");
    assert_eq!(changed.order()["expected_completion_date"], "2026-02-20");
    assert_eq!(changed.order()["version"], "2");
    assert_eq!(get(&base, &token, id).await.order(), changed.order());
    assert_eq!(call(&base, Method::POST, &path, Some(&token), None).await.status, 405, "PATCH only");
}

#[tokio::test]
async fn change_adds_updates_and_deletes_lines_and_computes_the_totals_again() {
    let sandbox = start().await;
    let base = sandbox.base_url();
    let token = token(&base).await;
    let created =
        create(&base, &token, order(vec![line("FLOWERS", "1", "500.10"), line("ADDITIONAL_CHARGES", "1", "50.25")]))
            .await;
    let id = created.order()["id"].as_str().unwrap();
    let uuids: Vec<&str> =
        created.order()["lines"].as_array().unwrap().iter().map(|l| l["uuid"].as_str().unwrap()).collect();
    let path = format!("{PURCHASE_ORDERS_PATH}/{id}/change");

    let change = json!({ "purchase_order": { "lines": [
        { "op": "add", "item_id": "FLOWERS", "item_quantity": "2", "item_price_snapshot": {"pricing_rule": {"price": "5.55"}} },
        { "op": "update", "uuid": uuids[0], "item_quantity": "4" },
        { "op": "delete", "uuid": uuids[1] },
    ]}});
    let changed = call(&base, Method::POST, &path, Some(&token), Some(change)).await;
    assert_eq!(changed.status, 200, "{}", changed.body);
    // 4 × 500.10 + 2 × 5.55; the additional charges are gone.
    assert_eq!(amounts(changed.order()).2, "2011.500000");
    let lines = changed.order()["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 2);
    assert_eq!(
        (lines[0]["uuid"].as_str(), &lines[0]["item_quantity"], &lines[0]["total"]),
        (Some(uuids[0]), &json!("4.000000"), &json!("2000.400000"))
    );
    assert_eq!((&lines[1]["item_id"], &lines[1]["total"]), (&json!("FLOWERS"), &json!("11.100000")));

    // All or nothing: an unknown line uuid refuses the whole change, naming it.
    let partly_wrong = json!({ "purchase_order": { "lines": [
        { "op": "update", "uuid": uuids[0], "item_quantity": "1" },
        { "op": "delete", "uuid": uuids[1] },
    ]}});
    let refused = call(&base, Method::POST, &path, Some(&token), Some(partly_wrong)).await;
    assert_eq!(refused.status, 400);
    assert_eq!(
        refused.errors(),
        [format!("UNKNOWN_LINE purchase_order.lines[1].uuid: no line \"{}\" on purchase order {id}", uuids[1])]
    );
    assert_eq!(amounts(get(&base, &token, id).await.order()).2, "2011.500000", "nothing was applied");

    let unknown_op = json!({ "purchase_order": { "lines": [{ "op": "replace", "uuid": uuids[0] }] } });
    let refused = call(&base, Method::POST, &path, Some(&token), Some(unknown_op)).await;
    assert_eq!(
        refused.errors(),
        [
            "INVALID_VALUE purchase_order.lines[0].op: expected \"add\", \"update\" or \"delete\", found string \"replace\""
        ]
    );
}

#[tokio::test]
async fn a_cancelled_po_is_inactive_and_refuses_changes_until_reactivated() {
    let sandbox = start().await;
    let base = sandbox.base_url();
    let token = token(&base).await;
    let id = create(&base, &token, order(vec![line("FLOWERS", "1", "1.00")])).await.order()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let po = |action: &str| format!("{PURCHASE_ORDERS_PATH}/{id}/{action}");

    let cancelled = call(&base, Method::POST, &po("cancel"), Some(&token), None).await;
    assert_eq!((cancelled.status, &cancelled.body), (204, &Value::Null), "no content");
    assert_eq!(get(&base, &token, &id).await.order()["status"], "INACTIVE");
    let note = json!({ "purchase-order": { "purchase_order_note": "changed" } });
    let refused = call(&base, Method::PATCH, &po("information"), Some(&token), Some(note.clone())).await;
    assert_eq!((refused.status, refused.body["errors"][0]["code"].as_str()), (400, Some("PO_INACTIVE")));
    let add = json!({ "purchase_order": { "lines": [{ "op": "add", "item_id": "FLOWERS", "item_quantity": "1" }] } });
    let refused = call(&base, Method::POST, &po("change"), Some(&token), Some(add.clone())).await;
    assert_eq!((refused.status, refused.body["errors"][0]["code"].as_str()), (400, Some("PO_INACTIVE")));
    assert_eq!(
        call(&base, Method::POST, &po("cancel"), Some(&token), None).await.status,
        204,
        "cancelling twice is harmless"
    );

    let reactivated = call(&base, Method::POST, &po("reactivate"), Some(&token), None).await;
    assert_eq!((reactivated.status, &reactivated.body), (204, &Value::Null));
    assert_eq!(get(&base, &token, &id).await.order()["status"], "ACTIVE");
    assert_eq!(call(&base, Method::PATCH, &po("information"), Some(&token), Some(note)).await.status, 200);
    let changed = call(&base, Method::POST, &po("change"), Some(&token), Some(add)).await;
    assert_eq!(amounts(changed.order()).2, "1.000000", "a line without a price costs 0 in the sandbox");
}

#[tokio::test]
async fn a_deleted_po_is_gone() {
    let sandbox = start().await;
    let base = sandbox.base_url();
    let token = token(&base).await;
    let id = create(&base, &token, order(vec![line("FLOWERS", "1", "1.00")])).await.order()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("{PURCHASE_ORDERS_PATH}/{id}");
    assert_eq!(call(&base, Method::DELETE, &path, Some(&token), None).await.status, 204);
    let gone = get(&base, &token, &id).await;
    assert_eq!((gone.status, gone.errors()), (404, vec![format!("NOT_FOUND purchase order {id} not found")]));
    assert_eq!(call(&base, Method::DELETE, &path, Some(&token), None).await.status, 404);
    assert!(sandbox.purchase_orders().is_empty());
}

#[tokio::test]
async fn an_injected_429_carries_retry_after_then_the_request_succeeds() {
    let sandbox = start().await;
    let base = sandbox.base_url();
    let token = token(&base).await;
    let failure = json!({ "times": 1, "status": 429, "retry_after": 2, "path_contains": PURCHASE_ORDERS_PATH });
    assert_eq!(call(&base, Method::POST, "/_sandbox/fail", None, Some(failure)).await.status, 200);
    let body = order(vec![line("FLOWERS", "1", "1.00")]);
    let throttled = create(&base, &token, body.clone()).await;
    assert_eq!((throttled.status, throttled.retry_after.as_deref()), (429, Some("2")));
    assert!(throttled.errors()[0].starts_with("TOO_MANY_REQUESTS "), "{:?}", throttled.errors());
    assert!(sandbox.purchase_orders().is_empty(), "a throttled create creates nothing");
    let created = create(&base, &token, body).await;
    assert_eq!(created.status, 201);
    let id = created.order()["id"].as_str().unwrap();

    // Only the requests the filter names fail: /change of this PO, twice, with a 503.
    sandbox.fail_next(Failure {
        times: Some(2),
        status: Some(503),
        path_contains: Some(format!("{id}/change")),
        ..Failure::default()
    });
    assert_eq!(get(&base, &token, id).await.status, 200);
    let add = json!({ "purchase_order": { "lines": [{ "op": "add", "item_id": "FLOWERS", "item_quantity": "1" }] } });
    let change = format!("{PURCHASE_ORDERS_PATH}/{id}/change");
    for _ in 0..2 {
        assert_eq!(call(&base, Method::POST, &change, Some(&token), Some(add.clone())).await.status, 503);
    }
    assert_eq!(call(&base, Method::POST, &change, Some(&token), Some(add)).await.status, 200);
}

#[tokio::test]
async fn a_create_whose_answer_was_lost_is_found_in_the_list() {
    let sandbox = start().await;
    let base = sandbox.base_url();
    let token = token(&base).await;
    sandbox.fail_next(Failure { times: Some(1), delay_after_ms: Some(800), ..Failure::default() });
    let impatient = reqwest::Client::builder().timeout(Duration::from_millis(200)).build().unwrap();
    let lost = impatient
        .post(format!("{base}{PURCHASE_ORDERS_PATH}"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(json!({ "purchase_order": order(vec![line("FLOWERS", "1", "1.00")]) }).to_string())
        .send()
        .await;
    assert!(lost.is_err_and(|e| e.is_timeout()));
    // Another PO for another account, then the lost one looked for by account and note.
    let mut other = order(vec![line("FLOWERS", "1", "2.00")]);
    other["account_id"] = json!("SUP-0002");
    assert_eq!(create(&base, &token, other).await.status, 201);
    let listed =
        call(&base, Method::GET, &format!("{PURCHASE_ORDERS_PATH}?account_id=SUP-0001"), Some(&token), None).await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    let found: Vec<&Value> = listed.body["purchase_orders"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|po| po["purchase_order_note"].as_str().is_some_and(|n| n.contains("Komet PO P004410 ")))
        .collect();
    assert_eq!(found.len(), 1, "{}", listed.body);
    assert_eq!(listed.body["pagination"]["records"], 1);

    // Pages, and no filter the docs do not have.
    let page = call(&base, Method::GET, &format!("{PURCHASE_ORDERS_PATH}?limit=1&offset=0"), Some(&token), None).await;
    assert_eq!(page.body["purchase_orders"].as_array().unwrap().len(), 1);
    assert_eq!(page.body["pagination"]["records"], 2);
    assert_eq!(page.body["pagination"]["next_page"], format!("{PURCHASE_ORDERS_PATH}?limit=1&offset=1"));
    let refused =
        call(&base, Method::GET, &format!("{PURCHASE_ORDERS_PATH}?note_contains=P004410"), Some(&token), None).await;
    assert_eq!(refused.status, 400);
    assert!(
        refused.errors()[0].starts_with("UNKNOWN_FIELD note_contains: unknown query parameter"),
        "{:?}",
        refused.errors()
    );
}

#[tokio::test]
async fn a_caller_id_that_exists_is_a_duplicate() {
    let sandbox = start().await;
    let base = sandbox.base_url();
    let token = token(&base).await;
    let mut body = order(vec![line("FLOWERS", "1", "1.00")]);
    body["id"] = json!("PO-KOMET-48213");
    let created = create(&base, &token, body.clone()).await;
    assert_eq!((created.status, &created.order()["id"]), (201, &json!("PO-KOMET-48213")));
    let again = create(&base, &token, body).await;
    assert_eq!(again.status, 400);
    assert_eq!(
        again.body,
        json!({"errors": [{"code": "DUPLICATE", "message": "purchase order PO-KOMET-48213 already exists"}]})
    );
    assert_eq!(sandbox.purchase_orders().len(), 1);
}

#[tokio::test]
async fn recorded_requests_never_hold_the_token_or_the_client_secret() {
    let sandbox = start().await;
    let base = sandbox.base_url();
    let token = token(&base).await;
    let id = create(&base, &token, order(vec![line("FLOWERS", "1", "1.00")])).await.order()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(get(&base, &token, &id).await.status, 200);
    // A client that sends its credentials form-encoded to a wrong path is recorded without them too.
    let stray = reqwest::Client::new()
        .post(format!("{base}/api/v1/oauth/token"))
        .body("grant_type=client_credentials&client_secret=local-exsited-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(stray.status(), 404);

    let text = reqwest::get(format!("{base}/_sandbox/requests")).await.unwrap().text().await.unwrap();
    assert!(!text.contains("local-exsited-secret"), "{text}");
    assert!(!text.contains(&token), "{text}");
    let recorded: Vec<Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(recorded.len(), 4);
    assert_eq!(
        (&recorded[0]["path"], &recorded[0]["response_status"], &recorded[1]["response_status"]),
        (&json!(TOKEN_PATH), &json!(200), &json!(201))
    );
    let token_body: Value = serde_json::from_str(recorded[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        (&token_body["client_id"], &token_body["client_secret"]),
        (&json!("local-exsited-client"), &json!("<redacted>"))
    );
    assert!(recorded.iter().all(|r| r["headers"].get("authorization").is_none()));
    let sent = json!({ "purchase_order": order(vec![line("FLOWERS", "1", "1.00")]) }).to_string();
    assert_eq!(sandbox.requests()[1].body, sent, "a body without secrets is recorded as sent");
    assert_eq!(sandbox.requests()[3].body, "grant_type=client_credentials&client_secret=<redacted>");
}

#[tokio::test]
async fn unknown_paths_and_methods_answer_in_the_error_shape() {
    let sandbox = start().await;
    let base = sandbox.base_url();
    let token = token(&base).await;
    let nowhere = call(&base, Method::GET, "/api/v3/invoices", Some(&token), None).await;
    assert_eq!(
        (nowhere.status, nowhere.errors()),
        (404, vec!["NOT_FOUND no such resource: /api/v3/invoices".to_owned()])
    );
    let put =
        reqwest::Client::new().put(format!("{base}{PURCHASE_ORDERS_PATH}")).bearer_auth(&token).send().await.unwrap();
    assert_eq!((put.status().as_u16(), put.headers()["allow"].to_str().unwrap()), (405, "GET, POST"));
    let missing = get(&base, &token, "PO-NOPE").await;
    assert_eq!(
        (missing.status, missing.errors()),
        (404, vec!["NOT_FOUND purchase order PO-NOPE not found".to_owned()])
    );
}

#[tokio::test]
async fn reset_returns_to_the_configuration() {
    let sandbox = start().await;
    let base = sandbox.base_url();
    sandbox.add_account("SUP-0003");
    let token = token(&base).await;
    let mut body = order(vec![line("FLOWERS", "1", "1.00")]);
    body["account_id"] = json!("SUP-0003");
    assert_eq!(create(&base, &token, body.clone()).await.status, 201);
    sandbox.fail_next(Failure { times: None, status: Some(500), ..Failure::default() });
    assert_eq!(call(&base, Method::POST, "/_sandbox/reset", None, None).await.status, 200);
    assert!(sandbox.purchase_orders().is_empty() && sandbox.requests().is_empty());
    assert_eq!(sandbox.tokens_issued(), 0);
    assert_eq!(
        call(&base, Method::GET, PURCHASE_ORDERS_PATH, Some(&token), None).await.status,
        401,
        "tokens are forgotten"
    );
    let token = self::token(&base).await;
    let refused = create(&base, &token, body).await;
    assert_eq!(refused.body["errors"][0]["code"], "UNKNOWN_ACCOUNT", "added accounts are forgotten");
}

#[tokio::test]
async fn every_problem_of_a_create_is_named_with_its_path() {
    let sandbox = start().await;
    let base = sandbox.base_url();
    let token = token(&base).await;
    let flowers = sandbox.item_uuid("FLOWERS").unwrap();
    let body = json!({
        "currency": "usd", "account_id": "SUP-0009", "price_tax_inclusive": false, "issue_date": "09/02/2026",
        "purchaseOrderNote": "x", "total": "1.00",
        "lines": [
            {"item_id": "ROSES", "item_quantity": 1, "item_price_snapshot": {"pricing_rule": {"price": 1.5}}},
            {"item_uuid": flowers, "item_quantity": "0"},
            {"item_id": "ADDITIONAL_CHARGES", "item_uuid": flowers, "item_quantity": "-1"},
            "x"
        ]
    });
    let refused = create(&base, &token, body).await;
    assert_eq!(refused.status, 400);
    assert_eq!(
        refused.errors(),
        [
            "UNKNOWN_FIELD purchase_order.purchaseOrderNote: unknown field",
            "UNKNOWN_FIELD purchase_order.total: is set by Exsited, a request cannot set it",
            "INVALID_VALUE purchase_order.currency: expected a currency code like \"USD\", found \"usd\"",
            "UNKNOWN_ACCOUNT purchase_order.account_id: no supplier account \"SUP-0009\" (known: SUP-0001, SUP-0002)",
            "INVALID_VALUE purchase_order.price_tax_inclusive: expected the string \"true\" or \"false\", found false",
            "INVALID_VALUE purchase_order.issue_date: expected a date string like \"2026-02-09\", found string \"09/02/2026\"",
            "UNKNOWN_ITEM purchase_order.lines[0].item_id: no item \"ROSES\" (known: ADDITIONAL_CHARGES, FLOWERS)",
            "INVALID_VALUE purchase_order.lines[0].item_quantity: expected a decimal string like \"12.50\", found the number 1",
            "INVALID_VALUE purchase_order.lines[0].item_price_snapshot.pricing_rule.price: expected a decimal string like \"12.50\", found the number 1.5",
            "INVALID_VALUE purchase_order.lines[1].item_quantity: must be greater than 0",
            "INVALID_VALUE purchase_order.lines[2].item_uuid: names item \"FLOWERS\", not \"ADDITIONAL_CHARGES\"",
            "INVALID_VALUE purchase_order.lines[2].item_quantity: must be greater than 0",
            "INVALID_VALUE purchase_order.lines[3]: expected an object, found string \"x\"",
        ]
    );
    let wrapped_wrongly = call(
        &base,
        Method::POST,
        PURCHASE_ORDERS_PATH,
        Some(&token),
        Some(json!({ "purchase-order": order(vec![line("FLOWERS", "1", "1")]) })),
    )
    .await;
    assert_eq!(
        wrapped_wrongly.errors(),
        [
            "UNKNOWN_FIELD purchase-order: unknown field; this endpoint takes its fields under \"purchase_order\"",
            "REQUIRED purchase_order: is required",
        ]
    );
    let mut no_lines = order(vec![]);
    no_lines.as_object_mut().unwrap().remove("currency");
    assert_eq!(
        create(&base, &token, no_lines).await.errors(),
        ["REQUIRED purchase_order.currency: is required", "REQUIRED purchase_order.lines: must hold at least one line"]
    );
    let not_json = reqwest::Client::new()
        .post(format!("{base}{PURCHASE_ORDERS_PATH}"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{\"purchase_order\":")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 400);
    assert!(not_json.text().await.unwrap().contains("INVALID_JSON"));
}

#[tokio::test]
async fn decimal_strings_are_plain_decimals_and_amounts_are_exact() {
    let sandbox = start().await;
    let base = sandbox.base_url();
    let token = token(&base).await;
    let bad = ["", "1.", ".5", "+1", "1e3", " 1", "1,5", "--1", "NaN", "1.2.3"];
    let refused = create(&base, &token, order(bad.iter().map(|q| line("FLOWERS", q, "1.00")).collect())).await;
    let expected: Vec<String> = bad
        .iter()
        .enumerate()
        .map(|(i, q)| {
            format!(
                "INVALID_VALUE purchase_order.lines[{i}].item_quantity: expected a decimal string like \"12.50\", found string {q:?}"
            )
        })
        .collect();
    assert_eq!(refused.errors(), expected);
    // More fraction digits than the sandbox's exact arithmetic takes is refused, not rounded.
    let tiny = format!("0.{}1", "0".repeat(39));
    let refused = create(&base, &token, order(vec![line("FLOWERS", "1", &tiny)])).await;
    assert_eq!(
        refused.errors(),
        [
            "INVALID_VALUE purchase_order.lines[0].item_price_snapshot.pricing_rule.price: has more digits than the sandbox computes with (18 after the point, 38 in all)"
        ]
    );

    // Never rounded: 1.5 × 0.333333 keeps its seventh digit; ten times 0.1 is exactly 1; a negative price counts.
    let mut lines = vec![line("FLOWERS", "1.5", "0.333333"), line("ADDITIONAL_CHARGES", "1", "-2.50")];
    lines.extend((0..10).map(|_| line("FLOWERS", "1", "0.1")));
    let created = create(&base, &token, order(lines)).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let po = created.order();
    assert_eq!(po["lines"][0]["total"], "0.4999995");
    assert_eq!(po["lines"][1]["total"], "-2.500000");
    assert_eq!(amounts(po), ("-1.0000005".into(), "0.000000".into(), "-1.0000005".into()));

    let huge = "9".repeat(30);
    let refused = create(&base, &token, order(vec![line("FLOWERS", &huge, &huge)])).await;
    assert_eq!(refused.errors(), ["INVALID_VALUE purchase_order.lines[0]: quantity × price is too large"]);
}

#[tokio::test]
async fn line_operations_are_all_checked_before_any_is_applied() {
    let sandbox = start().await;
    let base = sandbox.base_url();
    let token = token(&base).await;
    let id = create(&base, &token, order(vec![line("FLOWERS", "1", "1.00")])).await.order()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let only_line = get(&base, &token, &id).await.order()["lines"][0]["uuid"].as_str().unwrap().to_owned();
    let path = format!("{PURCHASE_ORDERS_PATH}/{id}/change");
    let body = json!({"purchase_order": {"lines": [
        {"op": "remove", "uuid": "u"}, {"op": "update", "uuid": "u"}, {"uuid": "u"}, {"op": "delete"},
        {"op": "update", "uuid": "u", "item_id": "FLOWERS", "item_quantity": 2}
    ]}});
    let refused = call(&base, Method::POST, &path, Some(&token), Some(body)).await;
    assert_eq!(
        refused.errors(),
        [
            "INVALID_VALUE purchase_order.lines[0].op: expected \"add\", \"update\" or \"delete\", found string \"remove\"",
            "REQUIRED purchase_order.lines[1]: nothing to update: give item_quantity, item_price_snapshot, item_name or item_accounting_code",
            "REQUIRED purchase_order.lines[2].op: is required (\"add\", \"update\" or \"delete\")",
            "REQUIRED purchase_order.lines[3].uuid: is required",
            "UNKNOWN_FIELD purchase_order.lines[4].item_id: unknown field",
            "INVALID_VALUE purchase_order.lines[4].item_quantity: expected a decimal string like \"12.50\", found the number 2",
        ]
    );
    let empty_it = json!({"purchase_order": {"lines": [{"op": "delete", "uuid": only_line}]}});
    let refused = call(&base, Method::POST, &path, Some(&token), Some(empty_it)).await;
    assert_eq!(refused.errors(), ["INVALID_VALUE purchase_order.lines: a purchase order must keep at least one line"]);
    assert_eq!(get(&base, &token, &id).await.order()["version"], "1", "nothing was applied");
    let no_such_po =
        call(&base, Method::POST, &format!("{PURCHASE_ORDERS_PATH}/PO-NOPE/change"), Some(&token), Some(json!({})))
            .await;
    assert_eq!(no_such_po.status, 404, "the PO is looked for before the body is checked");
}

#[tokio::test]
async fn items_have_stable_uuids_and_ids_are_path_segments() {
    let sandbox = start().await;
    let other = Sandbox::new(Config::default());
    let flowers = sandbox.item_uuid("FLOWERS").unwrap();
    assert_eq!(Some(&flowers), other.item_uuid("FLOWERS").as_ref(), "the same uuid in every sandbox");
    assert_ne!(Some(&flowers), sandbox.item_uuid("ADDITIONAL_CHARGES").as_ref());
    assert_eq!(sandbox.item_uuid("ROSES"), None);

    let base = sandbox.base_url();
    let token = token(&base).await;
    let mut body = order(vec![json!({"item_uuid": flowers, "item_quantity": "2"})]);
    body["id"] = json!("PO-KOMET-48213");
    let created = create(&base, &token, body).await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(
        (&created.order()["lines"][0]["item_id"], &created.order()["lines"][0]["item_name"]),
        (&json!("FLOWERS"), &json!("FLOWERS")),
        "a line named by item uuid is the item; without a name it takes the item's"
    );
    // A percent-encoded id reaches the same PO.
    assert_eq!(get(&base, &token, "PO%2DKOMET%2D48213").await.status, 200);
    let mut spaced = order(vec![line("FLOWERS", "1", "1")]);
    spaced["id"] = json!("PO 1/2");
    let refused = create(&base, &token, spaced).await;
    assert_eq!(
        refused.errors(),
        ["INVALID_VALUE purchase_order.id: \"PO 1/2\" is not a usable id (1-100 characters, no spaces or /?#%)"]
    );
}
