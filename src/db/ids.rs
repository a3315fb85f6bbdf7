//! Newtype IDs, one per table, so a `UserId` is never passed where a
//! `DeviceId` is expected.

macro_rules! id_type {
    ($($(#[$meta:meta])* $name:ident),* $(,)?) => {$(
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord,
            serde::Serialize, serde::Deserialize,
            diesel::AsExpression, diesel::FromSqlRow,
        )]
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }

        impl diesel::serialize::ToSql<diesel::sql_types::BigInt, diesel::sqlite::Sqlite> for $name {
            fn to_sql<'b>(
                &'b self,
                out: &mut diesel::serialize::Output<'b, '_, diesel::sqlite::Sqlite>,
            ) -> diesel::serialize::Result {
                <i64 as diesel::serialize::ToSql<diesel::sql_types::BigInt, diesel::sqlite::Sqlite>>::to_sql(&self.0, out)
            }
        }

        impl diesel::deserialize::FromSql<diesel::sql_types::BigInt, diesel::sqlite::Sqlite> for $name {
            fn from_sql(
                bytes: <diesel::sqlite::Sqlite as diesel::backend::Backend>::RawValue<'_>,
            ) -> diesel::deserialize::Result<Self> {
                <i64 as diesel::deserialize::FromSql<diesel::sql_types::BigInt, diesel::sqlite::Sqlite>>::from_sql(bytes)
                    .map($name)
            }
        }
    )*};
}

id_type!(
    SrpConnectionId,
    ServerId,
    MessagingAgentId,
    UserId,
    GroupId,
    AdministratorId,
    RoleId,
    ItPolicyId,
    PolicyAssignmentId,
    SoftwareConfigurationId,
    SoftwareApplicationId,
    SoftwareAssignmentId,
    DeviceId,
    DiagnosticsId,
    ServiceBookId,
    MessageFilterId,
    MessageId,
    MessageHopId,
    StatisticsId,
    AuditEntryId,
    OutboundId,
    SessionId,
    AdministratorGroupId,
    AdminCommandId,
);
