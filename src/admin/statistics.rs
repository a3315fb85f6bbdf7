//! Message statistics for the console's charts: the server's counters and
//! the busiest users' (seed: the Messaging Agent keeps global and
//! individual statistics).

use axum::extract::State;
use axum::Json;
use schemars::JsonSchema;
use serde::Serialize;

use super::devices::StatisticsView;
use super::ApiError;
use super::ServerState;
use crate::db::models::statistics::Statistics;
use crate::db::models::user::User;

/// How many users the busiest list shows.
const BUSIEST: i64 = 10;

/// One user's counters.
#[derive(Debug, Serialize, JsonSchema)]
pub struct UserStatistics {
    pub user_id: i64,
    pub display_name: String,
    pub email: String,
    #[serde(flatten)]
    pub counters: StatisticsView,
}

/// The server's counters and the busiest users'.
#[derive(Debug, Serialize, JsonSchema)]
pub struct StatisticsReport {
    pub global: StatisticsView,
    /// Most messages (forwarded + sent) first.
    pub busiest: Vec<UserStatistics>,
}

/// `GET /api/statistics`
pub async fn report(State(state): State<ServerState>) -> Result<Json<StatisticsReport>, ApiError> {
    let report = state
        .db
        .run(|conn| {
            let global = StatisticsView::from(&Statistics::find_global(conn)?);
            let mut busiest = Vec::new();
            for counted in Statistics::find_busiest(conn, BUSIEST)? {
                let Some(user) = counted.user_id else {
                    continue;
                };
                let Some(user) = User::find_by_id(conn, user)? else {
                    continue;
                };
                busiest.push(UserStatistics {
                    user_id: user.id.0,
                    display_name: user.display_name,
                    email: user.email,
                    counters: StatisticsView::from(&counted),
                });
            }
            Ok(StatisticsReport { global, busiest })
        })
        .await?;
    Ok(Json(report))
}
