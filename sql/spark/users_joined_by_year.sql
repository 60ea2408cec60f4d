-- pinpipe output `users_joined_by_year` (contract §5) in Spark SQL 3.5: one statement over the views pin_table,
-- geo_table and user_table (the cleaned Delta tables). See sql/spark/README.md.
WITH u AS (
  SELECT ind, user_name, age, date_joined FROM (
    SELECT *, row_number() OVER (PARTITION BY ind ORDER BY
        user_name DESC NULLS LAST, age DESC NULLS LAST, date_joined DESC NULLS LAST) AS pick
    FROM user_table) WHERE pick = 1)
SELECT CAST(year(date_joined) AS INT) AS post_year, count(DISTINCT ind) AS number_users_joined
FROM u WHERE year(date_joined) BETWEEN 2015 AND 2020
GROUP BY CAST(year(date_joined) AS INT)
ORDER BY post_year
